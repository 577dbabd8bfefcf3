"""In-memory tables: pandas DataFrames, pyarrow Tables and Arrow C streams."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from importer.errors import SourceError
from importer.source.base import Batch, Cursor, Input, Settled


class FrameInput(Input):
    """A pandas DataFrame, a pyarrow Table, or anything with ``__arrow_c_stream__``."""

    def __init__(self, frame: Any) -> None:
        self.name = self.key = "<dataframe>"
        self.table = _to_table(frame)
        self.index = getattr(frame, "index", None) if _is_pandas(frame) else None

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        sink = _HashSink(digest)
        table = self.table.replace_schema_metadata(None)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return digest.hexdigest()

    def columns(self) -> list[str]:
        return list(self.table.column_names)

    def total_rows(self) -> int:
        return int(self.table.num_rows)

    def arrow_schemas(self) -> list[tuple[str, pa.Schema]]:
        return [(self.name, self.table.schema)]

    def batches(
        self, columns: list[str], cursor: Cursor, batch_size: int, settled: Settled | None
    ) -> Iterator[Batch]:
        table = self.table.select(columns)
        for offset in range(0, table.num_rows, batch_size):
            part = table.slice(offset, batch_size)
            n = part.num_rows
            start = cursor.position
            cursor.position += n
            if settled is not None and settled(start, start + n):
                empty = np.zeros(0, dtype=np.int64)
                yield Batch(self.name, None, empty, empty, None, skipped=n)
                continue
            record_batch = part.combine_chunks().to_batches()[0] if n else None
            if record_batch is None:
                continue
            yield Batch(
                self.name,
                record_batch,
                start + np.arange(n, dtype=np.int64),
                offset + 1 + np.arange(n, dtype=np.int64),
                None,
            )


@dataclass
class _HashSink:
    """A write-only file that hashes what is written to it (for fingerprints)."""

    digest: Any
    closed: bool = field(default=False)

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        return view.nbytes

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


def _is_pandas(frame: Any) -> bool:
    pandas = sys.modules.get("pandas")  # a DataFrame means pandas is loaded already
    return pandas is not None and isinstance(frame, pandas.DataFrame)


def _to_table(frame: Any) -> pa.Table:
    if isinstance(frame, pa.Table):
        return frame
    if isinstance(frame, pa.RecordBatch):
        return pa.Table.from_batches([frame])
    try:
        import pandas as pd

        if isinstance(frame, pd.DataFrame):
            return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SourceError(f"<dataframe>: cannot convert to Arrow: {exc}") from exc
    if hasattr(frame, "__arrow_c_stream__"):
        return pa.RecordBatchReader.from_stream(frame).read_all()
    raise SourceError(
        f"cannot read a {type(frame).__name__}: pass a path, a list of paths, a pandas "
        "DataFrame, a pyarrow Table or an object with __arrow_c_stream__"
    )
