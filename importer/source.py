"""Input files and frames as a stream of Arrow record batches with row numbers.

One reader serves the CLI and the notebook alike. Every row keeps a stable identity: its
*position* (0-based, across all inputs of a run, the key the ledger uses) and, for people,
its file, 1-based row number and, for CSV, the line it starts on. CSV columns are read as
text, so ids never pass through float. Memory stays flat: files are streamed a batch at a
time, never loaded whole.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from importer.errors import SourceError
from importer.schema import CsvOptions

DEFAULT_BATCH_SIZE = 65_536
_SNIFF_BYTES = 64 * 1024
_DELIMITERS = ",;\t|"

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
class _Cursor:
    position: int = 0


class Input:
    """One input: a file or an in-memory table."""

    name: str
    key: str

    def fingerprint(self) -> str:
        raise NotImplementedError

    def columns(self) -> list[str]:
        raise NotImplementedError

    def total_rows(self) -> int | None:
        return None

    def batches(
        self, columns: list[str], cursor: _Cursor, batch_size: int, settled: Settled | None
    ) -> Iterator[Batch]:
        raise NotImplementedError


class Source:
    """All the inputs of one run, read in order as one stream of rows."""

    def __init__(self, inputs: Sequence[Input], *, csv_options: CsvOptions | None = None) -> None:
        self.inputs = list(inputs)
        self.csv_options = csv_options or CsvOptions()

    @property
    def name(self) -> str:
        """How reports name this source."""
        return ", ".join(i.name for i in self.inputs)

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
        """Fail before reading anything if an input lacks one of these columns."""
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
        self.require(columns)
        cursor = _Cursor()
        for item in self.inputs:
            yield from item.batches(columns, cursor, batch_size, settled)


def open_source(source: Any, *, csv_options: CsvOptions | None = None) -> Source:
    """Turn what a user passed into a :class:`Source`.

    Accepts a path (CSV, CSV.gz, Parquet file or a directory of Parquet files), a list of
    paths, a pandas DataFrame, a pyarrow Table, or any object with ``__arrow_c_stream__``.
    """
    options = csv_options or CsvOptions()
    if isinstance(source, Source):
        return source
    if isinstance(source, str | Path):
        return Source([_open_path(Path(source), options)], csv_options=options)
    if isinstance(source, list | tuple) and all(isinstance(s, str | Path) for s in source):
        if not source:
            raise SourceError("no input given: pass at least one file")
        return Source([_open_path(Path(s), options) for s in source], csv_options=options)
    return Source([FrameInput(source)], csv_options=options)


def _open_path(path: Path, options: CsvOptions) -> Input:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise SourceError(f"{path}: directory holds no *.parquet files")
        return ParquetInput(path, files)
    if not path.exists():
        raise SourceError(f"{path}: file not found")
    suffixes = "".join(path.suffixes[-2:]).lower()
    if path.suffix.lower() in (".parquet", ".pq"):
        return ParquetInput(path, [path])
    if suffixes.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz")):
        return CsvInput(path, options)
    raise SourceError(
        f"{path}: unknown file type; use .csv, .csv.gz, .tsv, .parquet or a Parquet directory"
    )


def _hash_file(path: Path, digest: Any) -> None:
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)


class CsvInput(Input):
    """A CSV file, plain or gzipped, streamed with pyarrow with every column as text."""

    def __init__(self, path: Path, options: CsvOptions) -> None:
        self.path = path
        self.name = str(path)
        self.key = str(path.resolve())
        self.options = options
        self._header: tuple[list[str], str] | None = None

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        _hash_file(self.path, digest)
        return digest.hexdigest()

    def _raw(self) -> io.BufferedIOBase:
        if self.path.suffix.lower() == ".gz":
            return gzip.open(self.path, "rb")
        return self.path.open("rb")

    def header(self) -> tuple[list[str], str]:
        """The column names and the delimiter, read from the first line."""
        if self._header is None:
            try:
                with self._raw() as handle:
                    head = handle.read(_SNIFF_BYTES)
            except (OSError, EOFError) as exc:
                raise SourceError(f"{self.name}: cannot read: {exc}") from exc
            text = _decode(head, self.options.encoding, self.name).lstrip("\ufeff")
            if not text.strip():
                raise SourceError(f"{self.name}: the file is empty; a header line is needed")
            delimiter = self.options.delimiter
            if delimiter == "auto":
                delimiter = _sniff_delimiter(text)
            first = next(
                csv.reader(
                    io.StringIO(text), delimiter=delimiter, quotechar=self.options.quote_char
                )
            )
            names = [n.strip() for n in first]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise SourceError(f"{self.name}: header repeats column {', '.join(dupes)}")
            self._header = (names, delimiter)
        return self._header

    def columns(self) -> list[str]:
        return self.header()[0]

    def batches(
        self, columns: list[str], cursor: _Cursor, batch_size: int, settled: Settled | None
    ) -> Iterator[Batch]:
        names, delimiter = self.header()
        malformed: list[tuple[int, str, str]] = []

        def on_invalid(row: Any) -> str:
            malformed.append(
                (
                    row.number or 0,
                    row.text,
                    f"expected {row.expected_columns} columns, found {row.actual_columns}",
                )
            )
            return "skip"

        reader = self._open_reader(names, delimiter, batch_size, on_invalid)
        lines = _LineCounter(base=cursor.position, delimiter=delimiter, width=len(names))
        while True:
            try:
                record_batch = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
                raise SourceError(_csv_error(self.name, exc, self.options.encoding)) from exc
            found, malformed[:] = list(malformed), []
            yield lines.place(self.name, record_batch, found, cursor, columns)
        if malformed:  # records after the last full batch
            yield lines.place(self.name, None, list(malformed), cursor, columns)

    def _open_reader(
        self, names: list[str], delimiter: str, batch_size: int, on_invalid: Callable[[Any], str]
    ) -> pa.RecordBatchReader:
        # Batches of about batch_size rows: the reader counts in bytes, so guess 256 per row.
        block = max(1 << 16, min(batch_size * 256, 64 << 20))
        encoding = self.options.encoding.lower().replace("_", "-")
        read_options = pcsv.ReadOptions(
            use_threads=False,
            block_size=block,
            skip_rows=1,
            column_names=names,
            encoding="utf8"
            if encoding in ("utf-8", "utf8", "utf-8-sig")
            else self.options.encoding,
        )
        parse_options = pcsv.ParseOptions(
            delimiter=delimiter,
            quote_char=self.options.quote_char,
            newlines_in_values=True,
            ignore_empty_lines=False,
            invalid_row_handler=on_invalid,
        )
        convert_options = pcsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        try:
            stream = pa.input_stream(str(self.path), compression="detect")
            return pcsv.open_csv(stream, read_options, parse_options, convert_options)
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise SourceError(_csv_error(self.name, exc, self.options.encoding)) from exc


class _LineCounter:
    """Gives CSV rows their record numbers and first lines, counting newlines inside quotes.

    The parser numbers records (header and blank lines included, newlines inside quotes not)
    and tells the number of each malformed one. Blank lines are not rows: they are counted
    and dropped. Malformed records keep a row number and a position, so the ledger can settle
    them like any other rejected row.
    """

    def __init__(self, base: int, delimiter: str = ",", width: int = 1) -> None:
        self.base = base  # the position of the file's first row
        self.delimiter = delimiter
        self.width = width  # columns in the header
        self.next_record = 2  # the parser's record 1 is the header
        self.extra_lines = 0  # newlines inside quotes so far
        self.next_row = 1

    def place(
        self,
        name: str,
        batch: pa.RecordBatch | None,
        bad: list[tuple[int, str, str]],
        cursor: _Cursor,
        columns: list[str],
    ) -> Batch:
        count = 0 if batch is None else batch.num_rows
        newlines = np.zeros(count, dtype=np.int64)
        blank = np.ones(count, dtype=bool)
        if batch is not None:
            for column in batch.columns:
                newlines += pc.count_substring(column, "\n").to_numpy(zero_copy_only=False)
                blank &= pc.equal(pc.binary_length(column), 0).to_numpy(zero_copy_only=False)
        bad = sorted(bad)
        records = self.next_record + np.arange(count, dtype=np.int64)
        for number, _, _ in bad:
            records[records >= number] += 1
        # Every record of the batch in file order: parsed ones, then malformed ones.
        all_records = np.concatenate([records, np.array([b[0] for b in bad], dtype=np.int64)])
        all_extra = np.concatenate(
            [newlines, np.array([b[1].count("\n") for b in bad], dtype=np.int64)]
        )
        is_row = np.concatenate([~blank, np.ones(len(bad), dtype=bool)])
        order = np.argsort(all_records, kind="stable")
        extra_before = self.extra_lines + np.concatenate(([0], np.cumsum(all_extra[order])[:-1]))
        lines_sorted = all_records[order] + extra_before
        rows_sorted = self.next_row + np.cumsum(is_row[order]) - 1
        lines = np.empty_like(lines_sorted)
        rows = np.empty_like(rows_sorted)
        lines[order] = lines_sorted
        rows[order] = rows_sorted
        if len(all_records):
            self.next_record = int(all_records.max()) + 1
            self.extra_lines += int(all_extra.sum())
            self.next_row += int(is_row.sum())
        cursor.position = self.base + self.next_row - 1
        keep = ~blank
        swallowed = self._swallowing(batch, newlines, rows[:count], lines[:count])
        for index, _ in swallowed:
            keep[index] = False
        data = None
        if batch is not None:
            data = batch.select(columns)
            if not keep.all():
                data = data.filter(pa.array(keep))
        malformed = tuple(
            Malformed(int(self.base + r - 1), int(r), int(line), text, message)
            for (_, text, message), r, line in zip(bad, rows[count:], lines[count:], strict=True)
        ) + tuple(m for _, m in swallowed)
        kept_rows = rows[:count][keep]
        return Batch(
            file=name,
            data=data,
            positions=self.base + kept_rows - 1,
            rows=kept_rows,
            lines=lines[:count][keep],
            malformed=malformed,
            blank_lines=int(blank.sum()),
        )

    def _swallowing(
        self,
        batch: pa.RecordBatch | None,
        newlines: np.ndarray,
        rows: np.ndarray,
        lines: np.ndarray,
    ) -> list[tuple[int, Malformed]]:
        """Records whose quoted cell runs over lines that look like records of their own.

        An unclosed quote makes the parser read on, to the next quote or the end of the file,
        into one cell: every record in between would vanish inside it. A line within a cell
        that has at least as many delimiters as the header is taken as such a record; the
        whole record is then malformed (counted and shown), never quietly one row.
        """
        if batch is None or self.width < 2 or not newlines.any():
            return []  # one column: a record has no delimiter to recognise it by
        found = []
        for index in np.flatnonzero(newlines).tolist():
            cells = [column[index].as_py() or "" for column in batch.columns]
            inner = [line for cell in cells for line in cell.split("\n")[1:]]
            looks = sum(1 for line in inner if line.count(self.delimiter) >= self.width - 1)
            if looks:
                text = self.delimiter.join(cells)
                message = (
                    f"a quoted cell runs over {len(inner)} more lines, {looks:,} of which look "
                    f"like records: a quote is probably not closed on line {lines[index]}; "
                    "those records are inside this one"
                )
                shown = text if len(text) <= 200 else text[:200] + "…"
                found.append(
                    (
                        index,
                        Malformed(
                            int(self.base + rows[index] - 1),
                            int(rows[index]),
                            int(lines[index]),
                            shown,
                            message,
                        ),
                    )
                )
        return found


def _decode(head: bytes, encoding: str, name: str) -> str:
    try:
        return head.decode(encoding, errors="strict")
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 4:  # a character cut by the sniff window
            return head[: exc.start].decode(encoding)
        raise SourceError(_encoding_hint(name, encoding)) from exc
    except LookupError:
        raise SourceError(f"{name}: unknown encoding {encoding!r} in [csv] encoding") from None


def _encoding_hint(name: str, encoding: str) -> str:
    return (
        f"{name}: the file is not valid {encoding}; re-save it as UTF-8, or set "
        '[csv] encoding = "latin-1" (or the file\'s real encoding) in the schema'
    )


def _csv_error(name: str, exc: Exception, encoding: str) -> str:
    text = str(exc)
    if "UTF8" in text or "UTF-8" in text or isinstance(exc, UnicodeDecodeError):
        return _encoding_hint(name, encoding)
    return f"{name}: cannot parse as CSV: {text.splitlines()[0]}"


def _sniff_delimiter(text: str) -> str:
    sample = "\n".join(text.splitlines()[:50])
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        first = text.splitlines()[0]
        counts = {d: first.count(d) for d in _DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","


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
            _hash_file(file, digest)
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

    def batches(
        self, columns: list[str], cursor: _Cursor, batch_size: int, settled: Settled | None
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


class FrameInput(Input):
    """A pandas DataFrame, a pyarrow Table, or anything with ``__arrow_c_stream__``."""

    def __init__(self, frame: Any) -> None:
        self.name = self.key = "<dataframe>"
        self.table = _to_table(frame)

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

    def batches(
        self, columns: list[str], cursor: _Cursor, batch_size: int, settled: Settled | None
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
