"""Parquet files, or a directory of them, streamed by row group."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from importer.errors import SourceError
from importer.source.base import Batch, Cursor, Input, Settled, hash_file


class ParquetInput(Input):
    """A Parquet file or a directory of them, streamed by row group."""

    def __init__(self, path: Path, files: list[Path]) -> None:
        self.path = path
        self.name = str(path)
        self.key = str(path.resolve())
        self.files = files
        try:
            self._meta = [pq.ParquetFile(f) for f in files]
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{path}: cannot read as Parquet: {exc}") from exc

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for file in self.files:
            digest.update(str(file.relative_to(self.path) if file != self.path else "").encode())
            hash_file(file, digest)
        return digest.hexdigest()

    def columns(self) -> list[str]:
        names = list(self._meta[0].schema_arrow.names)
        for file, meta in zip(self.files[1:], self._meta[1:], strict=True):
            other = meta.schema_arrow.names
            if set(other) != set(names):
                raise SourceError(
                    f"{file}: its columns differ from {self.files[0]}'s; "
                    "a Parquet directory must hold files of one shape"
                )
        return names

    def total_rows(self) -> int:
        return sum(m.metadata.num_rows for m in self._meta)

    def arrow_schemas(self) -> list[tuple[str, pa.Schema]]:
        return [(str(f), m.schema_arrow) for f, m in zip(self.files, self._meta, strict=True)]

    def batches(
        self, columns: list[str], cursor: Cursor, batch_size: int, settled: Settled | None
    ) -> Iterator[Batch]:
        row = 1
        for file, meta in zip(self.files, self._meta, strict=True):
            for group in range(meta.num_row_groups):
                size = meta.metadata.row_group(group).num_rows
                start = cursor.position
                if settled is not None and size and settled(start, start + size):
                    empty = np.zeros(0, dtype=np.int64)
                    yield Batch(self.name, None, empty, empty, None, skipped=size)
                    cursor.position += size
                    row += size
                    continue
                try:
                    parts = meta.iter_batches(batch_size, row_groups=[group], columns=columns)
                    for part in parts:
                        n = part.num_rows
                        yield Batch(
                            str(file),
                            part,
                            cursor.position + np.arange(n, dtype=np.int64),
                            row + np.arange(n, dtype=np.int64),
                            None,
                        )
                        cursor.position += n
                        row += n
                except (pa.ArrowInvalid, OSError) as exc:
                    raise SourceError(f"{file}: cannot read row group {group}: {exc}") from exc
            row = 1
