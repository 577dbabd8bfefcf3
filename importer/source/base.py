"""What every reader shares: batches of rows, the Input base class, and Source, the inputs of
one run read in order as one stream of rows."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from importer.errors import SourceError

DEFAULT_BATCH_SIZE = 65_536

# A predicate on [start, stop) position ranges: True when the ledger has settled all of it.
Settled = Callable[[int, int], bool]


@dataclass(frozen=True)
class Malformed:
    """A CSV record the parser could not split into the header's columns."""

    position: int
    row: int
    line: int
    text: str
    message: str


@dataclass(frozen=True)
class Batch:
    """Rows of one input file, in file order.

    Attributes:
        file: the file's display name.
        data: the columns the schema reads, or None when every row was skipped unread.
        positions: each row's 0-based position across the run (the ledger's key).
        rows: each row's 1-based record number in its file.
        lines: each row's first line in a CSV file, else None.
        malformed: records the CSV parser rejected, already counted as rows.
        skipped: rows not read at all because the ledger has settled them.
    """

    file: str
    data: pa.RecordBatch | None
    positions: np.ndarray
    rows: np.ndarray
    lines: np.ndarray | None
    malformed: tuple[Malformed, ...] = ()
    skipped: int = 0
    blank_lines: int = 0

    @property
    def num_rows(self) -> int:
        """Rows this batch accounts for: read, malformed or skipped unread."""
        return len(self.positions) + len(self.malformed) + self.skipped


@dataclass
class Cursor:
    """Where the next row of a run goes: its position across all inputs."""

    position: int = 0


class Input:
    """One input: a file or an in-memory table."""

    name: str
    key: str
    index: Any = None  # a DataFrame's index: the labels of its rows, in order

    def fingerprint(self) -> str:
        raise NotImplementedError

    def columns(self) -> list[str]:
        raise NotImplementedError

    def total_rows(self) -> int | None:
        return None

    def arrow_schemas(self) -> list[tuple[str, pa.Schema]]:
        """The Arrow schema of each file (or frame) with typed columns, by display name."""
        return []

    def batches(
        self, columns: list[str], cursor: Cursor, batch_size: int, settled: Settled | None
    ) -> Iterator[Batch]:
        raise NotImplementedError


class Source:
    """All the inputs of one run, read in order as one stream of rows."""

    def __init__(self, inputs: Sequence[Input]) -> None:
        self.inputs = list(inputs)

    @property
    def name(self) -> str:
        """How reports name this source."""
        return ", ".join(i.name for i in self.inputs)

    @property
    def index(self) -> Any:
        """The index of a single DataFrame input (row r has label ``index[r - 1]``), else
        None: reports then show rows by label, so a notebook can ``df.loc[]`` them."""
        return self.inputs[0].index if len(self.inputs) == 1 else None

    @property
    def key(self) -> str:
        """What the ledger knows this source by: absolute paths (content is checked apart)."""
        return "\n".join(i.key for i in self.inputs)

    def fingerprint(self) -> str:
        """A hash of the content of every input, in order (not names or mtimes)."""
        digest = hashlib.sha256()
        for item in self.inputs:
            digest.update(item.fingerprint().encode())
        return digest.hexdigest()[:32]

    def require(self, columns: list[str]) -> None:
        """Fail before reading anything if an input lacks one of these columns, or holds
        one as a type that is not a cell of text (a list, a struct, a map...).

        Columns the schema does not read may have any type.
        """
        self._require_present(columns)
        for item in self.inputs:
            for where, schema in item.arrow_schemas():
                for arrow_field in schema:
                    advice = _not_text(arrow_field.type) if arrow_field.name in columns else None
                    if advice:
                        kind = str(arrow_field.type)
                        kind = kind if len(kind) <= 100 else kind[:100] + "…"
                        raise SourceError(
                            f"{where}: column {arrow_field.name!r} that the schema reads is "
                            f"{kind}, which cannot be read as one text cell; {advice}"
                        )

    def _require_present(self, columns: list[str]) -> None:
        for item in self.inputs:
            have = item.columns()
            missing = [c for c in columns if c not in have]
            if missing:
                names = ", ".join(repr(c) for c in missing)
                noun = "column" if len(missing) == 1 else "columns"
                raise SourceError(
                    f"{item.name}: missing {noun} {names} that the schema reads; "
                    f"the file has: {', '.join(have) or '(no columns)'}. "
                    "Fix the schema's column names or the file's header."
                )

    def total_rows(self) -> int | None:
        """The number of rows when known without reading (Parquet, frames), else None."""
        totals = [i.total_rows() for i in self.inputs]
        return None if any(t is None for t in totals) else sum(t for t in totals if t is not None)

    def batches(
        self,
        columns: list[str],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        settled: Settled | None = None,
    ) -> Iterator[Batch]:
        """Stream the given columns of every input as batches.

        Args:
            columns: the columns to read (see :meth:`importer.schema.Schema.columns`).
            batch_size: rows per batch.
            settled: lets whole parts the ledger has finished be skipped without decoding.
        """
        self._require_present(columns)  # any type: init and --rejects-rows read every column
        cursor = Cursor()
        for item in self.inputs:
            yield from item.batches(columns, cursor, batch_size, settled)


def hash_file(path: Path, digest: Any) -> None:
    """Feed a file's bytes to a hashlib digest, a megabyte at a time."""
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)


def _not_text(kind: pa.DataType) -> str | None:
    """What to do with a column of this type to map it, or None when it already holds one
    value per row that casts to text as the mapping reads it (numbers, times, strings,
    bytes that hold text; a dictionary of those)."""
    while True:
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        elif isinstance(kind, pa.BaseExtensionType):
            kind = kind.storage_type
        else:
            break
    if pa.types.is_nested(kind):
        return "flatten it, or pick the element with a column of its own, and map that column"
    advice = "convert it to text before importing, or map another column"
    if pa.types.is_fixed_size_binary(kind):  # UUIDs, hashes: bytes that are not text
        return advice
    try:
        pc.cast(pa.nulls(0, kind), pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        return advice
    return None
