"""CSV files, plain or gzipped: every column read as text, with row and line numbers."""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from importer.errors import SourceError
from importer.schema import CsvOptions
from importer.source.base import Batch, Cursor, Input, Malformed, Settled

_SNIFF_BYTES = 64 * 1024  # text after the header line the delimiter is detected from
_MAX_HEADER_BYTES = 16 << 20  # a header line longer than this is refused
_MIN_BLOCK = 1 << 16  # the smallest block the CSV reader is given at a time
_MAX_BLOCK = 1 << 30  # a CSV record must fit in a block: blocks grow up to this to hold one
_BYTES_PER_ROW = 256  # blocks hold at most block_size / this many lines (see _LineCapped)
_SHOWN_CHARS = 200  # raw text shown for a malformed record
_DELIMITERS = ",;\t|"


class CsvInput(Input):
    """A CSV file, plain or gzipped, streamed with pyarrow with every column as text."""

    def __init__(self, path: Path, options: CsvOptions) -> None:
        self.path = path
        self.name = str(path)
        self.key = str(path.resolve())
        self.options = options
        self._header: tuple[list[str], str] | None = None
        self._header_chars = 0
        self._lines: int | None = None

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        self._scan(digest)
        return digest.hexdigest()

    def total_rows(self) -> int | None:
        """About how many rows, for the progress bar's % and ETA: the lines after the header
        (a cell with a line break counts twice). Counted in the same read as a send's
        fingerprint, else in one read of its own (~1 GB/s). None for a gzipped file."""
        if self._lines is None and self.path.suffix.lower() != ".gz":
            try:
                self._scan(None)
            except OSError:
                return None
        return self._lines

    def _scan(self, digest: Any) -> None:
        """Read the file's bytes once: into ``digest`` if given, and count its rows."""
        newlines, last = 0, b""
        with self.path.open("rb") as raw:
            while chunk := raw.read(1 << 20):
                if digest is not None:
                    digest.update(chunk)
                newlines += chunk.count(b"\n")
                last = chunk[-1:]
        if self.path.suffix.lower() != ".gz":  # compressed bytes say nothing of lines
            self._lines = max(0, newlines + (last not in (b"", b"\n")) - 1)

    def _raw(self) -> io.BufferedIOBase:
        if self.path.suffix.lower() == ".gz":
            return gzip.open(self.path, "rb")
        return self.path.open("rb")

    def header(self) -> tuple[list[str], str]:
        """The column names and the delimiter, read from the first line, however long."""
        if self._header is None:
            line, after = self._first_line()
            if not (line + after).strip():
                raise SourceError(f"{self.name}: the file is empty; a header line is needed")
            delimiter = self.options.delimiter
            if delimiter == "auto":
                delimiter = _sniff_delimiter(line, after)
            try:
                reader = csv.reader(
                    io.StringIO(line), delimiter=delimiter, quotechar=self.options.quote_char
                )
                first = next(reader, [])
            except csv.Error as exc:
                raise SourceError(f"{self.name}: cannot read the header line: {exc}") from exc
            names = [n.strip() for n in first]
            dupes = sorted(n for n, times in Counter(names).items() if times > 1)
            if dupes:
                raise SourceError(f"{self.name}: header repeats column {', '.join(dupes)}")
            self._header = (names, delimiter)
            self._header_chars = len(line)
        return self._header

    def _first_line(self) -> tuple[str, str]:
        """The header line, to its end outside quotes, and up to _SNIFF_BYTES of text after
        it (from the line break on), streamed: never more than _MAX_HEADER_BYTES of header."""
        try:
            decoder = codecs.getincrementaldecoder(self.options.encoding)(errors="strict")
        except LookupError:
            raise SourceError(
                f"{self.name}: unknown encoding {self.options.encoding!r} in [csv] encoding"
            ) from None
        scan = _LineEnd(self.options.quote_char, self.options.delimiter)
        text, end, size, chunk = "", None, 0, _SNIFF_BYTES
        try:
            with self._raw() as handle:
                while True:
                    data = handle.read(chunk)
                    size += len(data)
                    text += decoder.decode(data, final=not data)
                    if size == len(data):  # the first read: a BOM is not part of the name
                        text = text.lstrip("\ufeff")
                    if end is None:
                        end = scan.find(text, final=not data)
                    if (size if end is None else end) > _MAX_HEADER_BYTES:
                        raise SourceError(
                            f"{self.name}: the header line is longer than "
                            f"{_MAX_HEADER_BYTES >> 20} MB; check that the file is CSV and "
                            "that every quote in its first line is closed (a line break "
                            "inside quotes does not end the line), or split its columns over "
                            "several files"
                        )
                    if not data or (end is not None and len(text) - end >= _SNIFF_BYTES):
                        break
                    chunk = min(max(chunk, len(text)), 4 << 20)  # O(n) for long headers
        except UnicodeDecodeError as exc:
            raise SourceError(_encoding_hint(self.name, self.options.encoding)) from exc
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(f"{self.name}: cannot read: {exc}") from exc
        end = len(text) if end is None else end
        return text[:end], text[end:]

    def columns(self) -> list[str]:
        return self.header()[0]

    def batches(
        self, columns: list[str], cursor: Cursor, batch_size: int, settled: Settled | None
    ) -> Iterator[Batch]:
        names, delimiter = self.header()
        malformed: list[_Bad] = []

        def on_invalid(row: Any) -> str:
            text = row.text or ""
            malformed.append(
                _Bad(
                    row.number or 0,
                    _shorten(text),
                    text.count("\n"),
                    f"expected {row.expected_columns} columns, found {row.actual_columns}",
                )
            )
            return "skip"

        lines = _LineCounter(base=cursor.position, delimiter=delimiter, width=len(names))
        # Batches of about batch_size rows: the reader counts in bytes, so guess 256 per row
        # (and _LineCapped holds a block to that many lines). The header fits the first block.
        block = max(_MIN_BLOCK, min(batch_size * _BYTES_PER_ROW, 64 << 20), 2 * self._header_chars)
        while True:
            # Reopened with larger blocks after a record too large for one: the records
            # already placed (and yielded) are read again but dropped, never yielded twice.
            start = lines.next_record
            try:
                read = self._record_batches(names, delimiter, block, on_invalid)
                for part, found in _in_order(read, malformed, start):
                    placed = lines.place(self.name, part, found, cursor, columns)
                    if placed.num_rows or placed.blank_lines:  # not the header alone
                        yield placed
            except _BlockTooSmallError as exc:
                malformed.clear()
                if block >= _MAX_BLOCK:
                    line = lines.next_record + lines.extra_lines
                    raise SourceError(
                        f"{self.name}: a cell near line {line:,} is larger than "
                        f"{_MAX_BLOCK >> 20:,} MB, the most a record can hold (or a quote "
                        "there is never closed, so the rest of the file reads as one cell); "
                        "close that quote, or shorten that cell"
                    ) from exc.__cause__
                block = min(2 * block, _MAX_BLOCK)
                continue
            break

    def _record_batches(
        self, names: list[str], delimiter: str, block: int, on_invalid: Callable[[Any], str]
    ) -> Iterator[pa.RecordBatch]:
        """The parser's batches; the header line comes first, as record 1."""
        reader = self._open_reader(names, delimiter, block, on_invalid)
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
                    raise self._read_error(exc) from exc
                yield batch
        finally:
            reader.close()

    def _open_reader(
        self, names: list[str], delimiter: str, block: int, on_invalid: Callable[[Any], str]
    ) -> pa.RecordBatchReader:
        encoding = self.options.encoding.lower().replace("_", "-")
        read_options = pcsv.ReadOptions(
            use_threads=False,
            block_size=block,
            # The header is read as a record, not skipped: pyarrow skips rows without
            # regard to quotes, and only within its first block.
            skip_rows=0,
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
            stream = _LineCapped(pa.input_stream(str(self.path), compression="detect"))
            return pcsv.open_csv(stream, read_options, parse_options, convert_options)
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise self._read_error(exc) from exc
        except OSError as exc:
            raise SourceError(f"{self.name}: cannot read: {exc}") from exc

    def _read_error(self, exc: Exception) -> Exception:
        if "straddl" in str(exc):  # a record larger than a block: try larger blocks
            return _BlockTooSmallError()
        return SourceError(_csv_error(self.name, exc, self.options.encoding))


class _BlockTooSmallError(Exception):
    """A CSV record did not fit in one block of the reader."""


class _LineEnd:
    """Finds where the first line of CSV text ends: at a line break outside quotes.

    As the parsers read it, a quote opens a quoted cell only at the start of a cell (the
    file's start or just after a delimiter: any candidate one while it is not known yet),
    and two quotes in a quoted cell are one quote. Text is given again, longer, until the
    end is found; the search goes on where it stopped.
    """

    def __init__(self, quote: str, delimiter: str) -> None:
        delimiters = re.escape(_DELIMITERS if delimiter == "auto" else delimiter)
        self.quote = quote
        self.pattern = re.compile(rf"[\r\n]|(?<![^{delimiters}]){re.escape(quote)}")
        self.pos = 0
        self.quoted = False

    def find(self, text: str, *, final: bool) -> int | None:
        """The index of the first line break outside quotes, or None if not in text yet."""
        pos = self.pos
        while True:
            if self.quoted:
                close = text.find(self.quote, pos)
                if close < 0 or (close + 1 == len(text) and not final):
                    self.pos = len(text) if close < 0 else close  # "" may go on after text
                    return None
                if text.startswith(self.quote, close + 1):  # "" inside a quoted cell
                    pos = close + 2
                    continue
                self.quoted, pos = False, close + 1
                continue
            found = self.pattern.search(text, pos)
            if found is None:
                self.pos = len(text)
                return None
            if found.group() in "\r\n":
                return found.start()
            self.quoted, pos = True, found.end()


class _LineCapped:
    """A byte stream whose reads of ``size`` bytes hold at most ``size / 256`` lines (but
    never less than 64 KB, or what is left).

    The CSV reader asks for blocks of bytes and makes one batch of each: a block of short
    lines became millions of rows (a blank line is one byte but a row of empty cells in
    every column, and row and line numbers for each): memory grew with the lines, not the
    batch size. Cutting reads at a number of lines keeps a batch near batch_size rows.
    """

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.closed = False
        self._buffer = b""
        self._offset = 0

    def readable(self) -> bool:
        return True

    def _lines(self, start: int, stop: int) -> int:
        buffer = self._buffer
        return max(buffer.count(b"\n", start, stop), buffer.count(b"\r", start, stop))

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            rest = self._buffer[self._offset :] + self.raw.read()
            self._buffer, self._offset = b"", 0
            return bytes(rest)
        if self._offset >= len(self._buffer):
            self._buffer, self._offset = bytes(self.raw.read(size)), 0
        start = self._offset
        limit = min(len(self._buffer) - start, size)
        cap = max(1, size // _BYTES_PER_ROW)
        taken = min(_MIN_BLOCK, limit)
        lines = self._lines(start, start + taken)
        while lines <= cap and taken < limit:  # grow by doubling: count each byte once
            grown = min(limit, 2 * taken)
            more = self._lines(start + taken, start + grown)
            if lines + more > cap:
                taken += (grown - taken) * (cap - lines) // more
                break
            taken, lines = grown, lines + more
        self._offset = start + taken
        if taken == len(self._buffer):
            return self._buffer
        return self._buffer[start : start + taken]

    def close(self) -> None:
        self.closed = True
        self.raw.close()


class _Bad(NamedTuple):
    """A record the CSV parser rejected: its number, its text cut short, its newlines."""

    number: int
    text: str
    newlines: int
    message: str


def _shorten(text: str) -> str:
    """Raw text as reports show it: at most _SHOWN_CHARS characters."""
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def _record_numbers(first: int, count: int, bad: Sequence[int]) -> np.ndarray:
    """The parser's numbers of ``count`` parsed records from ``first`` on, given the
    (skipped) numbers of the malformed ones among them."""
    index = np.arange(count, dtype=np.int64)
    if not bad:
        return first + index
    numbers = np.sort(np.asarray(bad, dtype=np.int64))
    before = numbers - first - np.arange(len(numbers), dtype=np.int64)  # parsed ones before
    return first + index + np.searchsorted(before, index, side="right")


def _in_order(
    read: Iterator[pa.RecordBatch], malformed: list[_Bad], start: int
) -> Iterator[tuple[pa.RecordBatch | None, list[_Bad]]]:
    """Each batch the parser yields, with the malformed records among its rows, from record
    ``start`` on (the ones before were placed before the reader was reopened).

    ``malformed`` fills as the parser goes, and it parses a block ahead: records reported
    while a batch was read may belong to the next one. A batch keeps those numbered before
    its last row; the others wait for the batch they are in (or the end).
    """
    next_record = 1
    waiting: list[_Bad] = []
    for batch in read:
        waiting += malformed
        malformed.clear()
        if not batch.num_rows:
            continue
        records = _record_numbers(next_record, batch.num_rows, [b.number for b in waiting])
        last = int(records[-1])
        next_record = last + 1
        found = [b for b in waiting if start <= b.number < last]
        waiting = [b for b in waiting if b.number > last]
        if last >= start:
            first = int(np.searchsorted(records, start))
            yield (batch.slice(first) if first else batch), found
    found = [b for b in waiting + malformed if b.number >= start]
    malformed.clear()
    if found:  # records after the last batch
        yield None, found


class _LineCounter:
    """Gives CSV rows their record numbers and first lines, counting newlines inside quotes.

    The parser numbers records (header and blank lines included, newlines inside quotes not)
    and tells the number of each malformed one. The header line is record 1: it is neither a
    row nor blank. Blank lines are not rows: they are counted and dropped. Malformed records
    keep a row number and a position, so the ledger can settle them like any other rejected
    row.
    """

    def __init__(self, base: int, delimiter: str = ",", width: int = 1) -> None:
        self.base = base  # the position of the file's first row
        self.delimiter = delimiter
        self.width = width  # columns in the header
        self.next_record = 1  # the parser's record 1 is the header
        self.extra_lines = 0  # newlines inside quotes so far
        self.next_row = 1

    def place(
        self,
        name: str,
        batch: pa.RecordBatch | None,
        bad: list[_Bad],
        cursor: Cursor,
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
        bad_numbers = np.array([b.number for b in bad], dtype=np.int64)
        records = _record_numbers(self.next_record, count, bad_numbers.tolist())
        header = records == 1
        blank &= ~header
        # Every record of the batch in file order: parsed ones, then malformed ones.
        all_records = np.concatenate([records, bad_numbers])
        all_extra = np.concatenate([newlines, np.array([b.newlines for b in bad], dtype=np.int64)])
        is_row = np.concatenate([~blank & ~header, bad_numbers != 1])
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
        keep = ~blank & ~header
        swallowed = self._swallowing(
            batch, np.where(header, 0, newlines), rows[:count], lines[:count]
        )
        for index, _ in swallowed:
            keep[index] = False
        data = None
        if batch is not None:
            data = batch.select(columns)
            if not keep.all():
                data = data.filter(pa.array(keep))
        malformed = tuple(
            Malformed(int(self.base + r - 1), int(r), int(line), b.text, b.message)
            for b, r, line in zip(bad, rows[count:], lines[count:], strict=True)
            if b.number != 1
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
                found.append(
                    (
                        index,
                        Malformed(
                            int(self.base + rows[index] - 1),
                            int(rows[index]),
                            int(lines[index]),
                            _shorten(text),
                            message,
                        ),
                    )
                )
        return found


def _encoding_hint(name: str, encoding: str) -> str:
    return (
        f"{name}: the file is not valid {encoding}; re-save it as UTF-8, or set [csv] "
        'encoding = "cp1252" in the schema (or pass --encoding cp1252) for an export from '
        "Excel or Windows, or the file's real encoding (latin-1, utf-16...)"
    )


def _csv_error(name: str, exc: Exception, encoding: str) -> str:
    text = str(exc)
    if "UTF8" in text or "UTF-8" in text or isinstance(exc, UnicodeDecodeError):
        return _encoding_hint(name, encoding)
    return f"{name}: cannot parse as CSV: {text.splitlines()[0]}"


def _sniff_delimiter(line: str, after: str) -> str:
    """The delimiter of the header line (and, when it is short, of the lines after it)."""
    if len(line) <= _SNIFF_BYTES:
        text = (line + after)[:_SNIFF_BYTES]
        sample = "\n".join(text.splitlines()[:50])
        try:
            return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
        except csv.Error:
            pass
    # The header alone: a very long one has plenty of delimiters to count (the sniffer's
    # regular expressions are slow on long lines).
    first = line.splitlines()[0] if line else ""
    counts = {d: first.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","
