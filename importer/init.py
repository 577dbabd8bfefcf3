"""Guess a schema file from a data file: the library side of ``event-backfill init FILE``.

:func:`guess_schema` reads the header and a sample of rows, looks at each column's name and
cells, and writes a commented TOML schema with its best guesses: each key comes with a
comment saying why it was chosen. What it cannot guess is written as a string starting with
``TODO`` and listed in :attr:`Guess.todos`, so nothing is sent until a person has decided.

The sample is small (2,000 rows by default), so the heuristics work on Python lists of cell
texts: simple and easy to follow, and quick enough at that size.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import textwrap
import unicodedata
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache, cached_property
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa

from importer.currencies import MINOR_UNITS
from importer.datafile import Datafile
from importer.schema import CsvOptions
from importer.source import CsvInput, Source, open_source

DEFAULT_SAMPLE_ROWS = 2000


def _word_set(text: str) -> frozenset[str]:
    """The words of a text, as a set."""
    return frozenset(text.split())


# Share of the non-empty sampled cells that must fit a pattern for a column to count.
_MOST = 0.8
# At most this many distinct values for an event name or status column.
_FEW = 20
_LINE = 98


def _fold(text: str) -> str:
    """A value compared without case or accents: ' Payée ' -> 'payee'."""
    decomposed = unicodedata.normalize("NFKD", text.strip())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


# Whole cell values meaning "this order/payment went through", by language (matched folded).
_SUCCESS_BY_LANGUAGE = {
    "English": "paid succeeded success successful completed complete captured settled approved",
    "German": "bezahlt abgeschlossen erfolgreich",
    "French": "payé payée terminé terminée réussi réussie complété complétée",
    "Spanish": "pagado pagada completado completada aprobado aprobada",
    "Italian": "pagato pagata completato completata",
    "Dutch": "betaald voltooid",
    "Portuguese": "pago paga concluído concluída",
}
# Other values only a status column holds (a hint that a column is one, never kept).
_OTHER_STATUS_BY_LANGUAGE = {
    "English": "failed refunded cancelled canceled pending declined denied reversed voided "
    "expired processing refused disputed chargeback on-hold",
    "German": "storniert rückerstattet erstattet fehlgeschlagen ausstehend abgebrochen "
    "abgelehnt wartend",
    "French": "annulé annulée remboursé remboursée échoué échouée refusé refusée",
    "Spanish": "cancelado cancelada reembolsado reembolsada fallido fallida pendiente rechazado",
    "Italian": "annullato annullata rimborsato rimborsata fallito fallita",
    "Dutch": "geannuleerd terugbetaald mislukt",
    "Portuguese": "cancelado cancelada reembolsado reembolsada falhou pendente recusado",
}
_OTHER_STATUS_PHRASES = (
    "in bearbeitung",
    "in wartestellung",
    "en attente",
    "en cours",
    "in attesa",
    "in behandeling",
    "en proceso",
    "on hold",
)
_SUCCESS_WORDS = frozenset(_fold(w) for t in _SUCCESS_BY_LANGUAGE.values() for w in t.split())
_STATUS_WORDS = _SUCCESS_WORDS | frozenset(
    [_fold(w) for t in _OTHER_STATUS_BY_LANGUAGE.values() for w in t.split()]
    + [_fold(p) for p in _OTHER_STATUS_PHRASES]
)
# A content-found status column has at most this many distinct values.
_FEW_STATUSES = 12
_CURRENCY_SYMBOLS = "$€£¥₹₩₽₺₪₫฿¢₦₱₴₸₡₲₵₭"
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_DIGITS = re.compile(r"[0-9]+")
_VARIATION = re.compile(r"[0-9]+(?:_[0-9]+)*")
_EPOCH = re.compile(r"[0-9]{9,19}(?:\.[0-9]+)?")
_ISO = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?"
    r"(?:Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)
_HAS_OFFSET = re.compile(r".*[T ][0-9]{2}:[0-9]{2}.*(?:Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)")
_DATE_LIKE = re.compile(r"[0-9]{1,4}[-/.][0-9]{1,2}[-/.][0-9]{1,4}")
_DATE_PARTS = ("%Y-%m-%d", "%Y/%m/%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%m-%d-%Y")
_TIME_PARTS = ("", " %H:%M", " %H:%M:%S", " %H:%M:%S.%f", " %I:%M %p", " %I:%M:%S %p")
_ZONE_PARTS = ("", " %z", "%z")
_STRPTIME_FORMATS = tuple(d + t + z for d in _DATE_PARTS for t in _TIME_PARTS for z in _ZONE_PARTS)
_DAY_MONTH = {"%d/%m/%Y": "%m/%d/%Y", "%m/%d/%Y": "%d/%m/%Y", "%d-%m-%Y": "%m-%d-%Y"}
_DAY_MONTH |= {v: k for k, v in _DAY_MONTH.items()}
_ID_SHAPES: tuple[tuple[re.Pattern[str], str, int], ...] = (
    (re.compile(r"[A-Za-z]{1,10}_[A-Za-z0-9]{6,}"), "prefixed ids such as", 2),
    (re.compile(r"#[0-9]+"), "order numbers such as", 2),
    (re.compile(r"[A-Za-z]{1,10}(?:-[A-Za-z0-9]+)*-[0-9][A-Za-z0-9]*"), "ids such as", 2),
    (re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"), "UUIDs such as", 2),
    (re.compile(r"[A-Za-z]{1,4}[0-9]{3,}"), "ids such as", 2),
    (
        re.compile(r"(?=.*[A-Fa-f])(?=.*[0-9])(?:[0-9A-F]{8,40}|[0-9a-f]{8,40})"),
        "hex ids such as",
        2,
    ),
    (re.compile(r"[0-9]{3,}"), "numeric ids such as", 1),
)
# Two words written as one ("orderId", "paidat" are split by case or by this list).
_COMPOUND_HEADS = _word_set(
    "order user customer client visitor event project account experiment variation "
    "transaction charge payment created paid purchase"
)
_COMPOUND_TAILS = _word_set("id name type number no at time date email status key")


@dataclass
class Guess:
    """A guessed schema.

    Attributes:
        text: the schema file (TOML), every guess with a comment saying why.
        todos: dotted keys whose value is a ``TODO`` placeholder, e.g. ``project_id.value``.
        notes: what was found, one line each (the CLI prints them on stderr).
    """

    text: str
    todos: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def guess_schema(
    source: Any,
    *,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    csv_options: CsvOptions | None = None,
    schema_path: str = "schema.toml",
    datafile: Datafile | None = None,
) -> Guess:
    """Read a sample of a source and guess its schema.

    Args:
        source: what :func:`importer.source.open_source` takes: a CSV or Parquet path, a list
            of paths, a DataFrame or an Arrow table.
        sample_rows: how many rows to look at (the first ones).
        csv_options: how to read CSV files (default: delimiter sniffed, UTF-8).
        schema_path: where the schema will be written, for the "check it with" line.
        datafile: the project's datafile: its project and account ids are used, and columns
            of its experiment, variation and event keys and attribute columns recognised.

    Returns:
        The schema text with its TODO keys and notes.

    Raises:
        SourceError: the source cannot be read (missing file, no header...).
    """
    opened = open_source(source, csv_options=csv_options)
    sample = _read_sample(opened, max(1, sample_rows))
    return _write(sample, opened, csv_options, schema_path, source, datafile)


# --- the sample ------------------------------------------------------------------------------


@dataclass
class _Column:
    """One column of the sample: its name and its cells as trimmed text ("" when empty)."""

    name: str
    index: int
    cells: list[str]
    temporal: bool = False  # an Arrow timestamp or date column (Parquet, DataFrames)
    zoned: bool = False  # an Arrow timestamp with a time zone (each value an instant)
    dates: bool = False  # an Arrow date column (no time of day)

    @cached_property
    def filled(self) -> list[str]:
        """The non-empty cells."""
        return [c for c in self.cells if c]

    @cached_property
    def words(self) -> frozenset[str]:
        """The lower-case words of the name: 'Created (UTC)' -> {'created', 'utc'}."""
        return _words(self.name)

    @cached_property
    def distinct(self) -> Counter[str]:
        """Each non-empty value and how often it occurs."""
        return Counter(self.filled)

    def share(self, test: Callable[[str], bool]) -> float:
        """The share of non-empty cells passing a test (0 when all are empty)."""
        return sum(map(test, self.filled)) / len(self.filled) if self.filled else 0.0

    @cached_property
    def time_shape(self) -> _TimeShape | None:
        """How the cells read as times, or None when they are not times."""
        return _time_shape(self)


@dataclass
class _Sample:
    """The sampled rows of a source, column by column."""

    name: str
    columns: list[_Column]
    rows: int
    full: list[bool]  # rows filling at least half as many cells as the fullest row
    malformed: int = 0
    delimiter: str | None = None

    @cached_property
    def full_rows(self) -> int:
        """How many rows are full ("order-level") rows."""
        return sum(self.full)

    def fill(self, column: _Column) -> float:
        """The share of full rows where the column is non-empty."""
        if not self.full_rows:
            return 0.0
        hits = sum(1 for cell, full in zip(column.cells, self.full, strict=True) if full and cell)
        return hits / self.full_rows

    def full_cells(self, column: _Column) -> list[str]:
        """The column's cells on full rows, empty ones included."""
        return [cell for cell, full in zip(column.cells, self.full, strict=True) if full]


def _read_sample(source: Source, sample_rows: int) -> _Sample:
    """The first ``sample_rows`` rows of every column as text."""
    names = source.inputs[0].columns()
    batches: list[pa.RecordBatch] = []
    malformed = count = 0
    for batch in source.batches(names, batch_size=sample_rows):
        malformed += len(batch.malformed)
        if batch.data is not None and batch.data.num_rows:
            part = batch.data.slice(0, sample_rows - count)
            batches.append(part)
            count += part.num_rows
        if count >= sample_rows:
            break
    columns = []
    for index, name in enumerate(names):
        arrays = [b.column(index) for b in batches]
        kind = arrays[0].type if arrays else pa.string()
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        cells = [_text(v) for a in arrays for v in a.to_pylist()]
        temporal = pa.types.is_timestamp(kind) or pa.types.is_date(kind)
        zoned = pa.types.is_timestamp(kind) and kind.tz is not None
        column = _Column(str(name), index, cells, temporal, zoned, pa.types.is_date(kind))
        columns.append(column)
    filled = [sum(1 for c in columns if c.cells[row]) for row in range(count)]
    most = max(filled, default=0)
    full = [n > 0 and n >= math.ceil(most / 2) for n in filled]
    first = source.inputs[0]
    delimiter = first.header()[1] if isinstance(first, CsvInput) else None
    return _Sample(source.name, columns, count, full, malformed, delimiter)


def _text(value: Any) -> str:
    """A cell as trimmed text, as the importer reads CSV cells."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value).strip()


def _words(name: str) -> frozenset[str]:
    """Lower-case words of a column name, camelCase and known compounds split."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    words: set[str] = set()
    for word in re.split(r"[^0-9a-z]+", spaced.lower()):
        if not word:
            continue
        words.add(word)
        for head in _COMPOUND_HEADS:
            tail = word.removeprefix(head)
            if tail != word and tail in _COMPOUND_TAILS:
                words.update((head, tail))
    return frozenset(words)


# --- one guess per key -----------------------------------------------------------------------


class _Todo(str):
    """A value the guesser could not find: written as a string starting with TODO."""

    __slots__ = ()


class _Regex(str):
    """A regular expression: written as a TOML literal string when it can be."""

    __slots__ = ()


@dataclass
class _Block:
    """Lines of the schema for one key: comments, then ``key = value`` items.

    ``header`` is the table header (``[value]``, ``[[filter]]``) or None for top-level keys.
    """

    header: str | None
    items: list[tuple[str, Any]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)  # lines written as they are, after the items
    used: list[str] = field(default_factory=list)  # columns it reads or accounts for


def _q(name: str) -> str:
    """A column name or cell for a comment: quoted, control characters escaped."""
    shown = name if len(name) <= 40 else name[:39] + "…"
    return "'" + "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown) + "'"


def _rejected(bad: Sequence[str], rule: str) -> str:
    """' 2 do not (e.g. 'n/a'): rejected (value-format).' or '' when none."""
    if not bad:
        return ""
    shown = ", ".join(list(dict.fromkeys(_q(c) for c in bad))[:3])
    verb = "does" if len(bad) == 1 else "do"
    return f" {len(bad):,} {verb} not (e.g. {shown}): rejected ({rule})."


def _row_kind(sample: _Sample) -> str:
    """'rows', or 'order rows' when some rows are sparse (line-item continuation rows)."""
    return "rows" if sample.full_rows == sample.rows else "order rows"


def _plural(count: int, noun: str) -> str:
    """'1 distinct value', '3 distinct values'."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _pct(part: int, whole: int) -> str:
    """'97%' (never rounds up to 100% when some are missing)."""
    if whole == 0:
        return "0%"
    value = math.floor(100 * part / whole) if part < whole else 100
    return f"{value}%"


def _ids(sample: _Sample, used: set[str]) -> _Block:
    """dedupe_key: a column unique over the full rows, non-empty on each, shaped like an id."""
    block = _Block(None)
    best: tuple[tuple[float, int, int], _Column, str] | None = None
    for column in sample.columns:
        if column.name in used or column.words & _NOT_IDS or not _maybe_id(column):
            continue
        cells = [c for c in sample.full_cells(column) if c]
        if not cells or len(set(cells)) != len(cells):
            continue
        shape = _id_shape(column, cells)
        if shape is None:
            continue
        label, strength = shape
        fill = sample.fill(column)
        if fill < 0.99:
            continue
        score = (fill, strength + _id_name_score(column), -column.index)
        if best is None or score > best[0]:
            best = (score, column, f"{label} {_q(cells[0])}")
    if best is None:
        block.comments.append(
            "No column is unique on every sampled row and shaped like an id (order number, "
            'charge id): no dedupe_key. Add one, e.g. dedupe_key = ["order_id"], so the same '
            "order is never sent twice."
        )
        block.notes.append("dedupe_key: none found (no unique id-like column)")
        return block
    _, column, example = best
    rows = sample.full_rows
    why = f"{_q(column.name)}: unique and non-empty on each of the {rows:,} sampled"
    why += " rows" if rows == sample.rows else f" order rows ({sample.rows - rows:,} other rows"
    why += "" if rows == sample.rows else " fill only a few columns, e.g. line items)"
    block.comments.append(f"{why}; {example} -> dedupe_key: each is sent once only.")
    block.items.append(("dedupe_key", [column.name]))
    block.notes.append(f"dedupe_key: {_q(column.name)} ({example})")
    block.used.append(column.name)
    return block


_NOT_IDS = _word_set(
    "customer user client visitor email mail session experiment variation project account sku "
    "product variant phone zip postal barcode"
)


def _maybe_id(column: _Column) -> bool:
    """False for columns that are something else by content: times, amounts with decimals or
    currency symbols, emails, free text (values with spaces)."""
    if column.temporal or column.time_shape is not None:
        return False
    if column.share(lambda v: bool(_EMAIL.fullmatch(v))) >= 0.5:
        return False
    if column.share(lambda v: " " in v) >= 0.5:
        return False
    money = _amounts(column)
    return money is None or (money.integers and not money.strip)


def _id_shape(column: _Column, cells: list[str]) -> tuple[str, int] | None:
    """How the cells look like ids ('prefixed ids such as', strength), or None."""
    for pattern, label, strength in _ID_SHAPES:
        hits = sum(1 for c in cells if pattern.fullmatch(c))
        if hits / len(cells) < 0.9:
            continue
        if strength == 2 or _id_name_score(column):
            return label, strength
        if _counting(cells):
            return "numbers counting up or down such as", strength
        return None  # other plain numbers are ids only when the name says so
    return None


def _counting(cells: list[str]) -> bool:
    """Numbers going one way (order numbers 5000, 5001...), mostly; not row numbers (1, 2,
    3... from 0 or 1: another export would number other rows the same) nor epoch times."""
    if len(cells) < 3 or not all(_DIGITS.fullmatch(c) for c in cells):
        return False
    numbers = [int(c) for c in cells]
    if numbers[0] in (0, 1) and numbers == list(range(numbers[0], numbers[0] + len(numbers))):
        return False
    if all(_EPOCH.fullmatch(c) and _plausible_epoch(c) for c in cells):
        return False
    steps = [b - a for a, b in pairwise(numbers)]
    up = sum(1 for d in steps if d > 0)
    return max(up, len(steps) - up) >= 0.9 * len(steps)


def _id_name_score(column: _Column) -> int:
    """2 for names like 'id', 'Name', 'order_id', 'Charge ID'; 1 for 'number', 'ref'; else 0."""
    words = column.words
    if words in ({"id"}, {"name"}, {"order", "id"}) or words & {"order", "charge", "transaction"}:
        return 2
    hints = {"id", "name", "number", "no", "reference", "ref", "invoice", "receipt", "payment"}
    hints |= {"nr", "nummer", "numero", "num"}
    return 1 if words & hints else 0


def _user(sample: _Sample) -> _Block:
    """user_id: an email column (hashed, lower-cased) or a customer/user id column (hashed)."""
    block = _Block("[user_id]")
    emails = [
        (sample.fill(c), bool(c.words & {"customer", "email", "user"}), -c.index, c)
        for c in sample.columns
        if c.share(lambda v: bool(_EMAIL.fullmatch(v))) >= _MOST and sample.fill(c) >= 0.5
    ]
    if emails:
        column = max(emails, key=lambda e: e[:3])[3]
        hits = sum(1 for v in column.filled if _EMAIL.fullmatch(v))
        block.comments += [
            f"{_q(column.name)}: {_pct(hits, len(column.filled))} of {len(column.filled):,} "
            "non-empty sampled cells look like email addresses -> hashed (sha256 of salt + "
            'address), lower-cased first (normalize = "email") so Ana@x.com and ana@x.com '
            "are one user.",
            "For real data, set salt_env to the name of an environment variable holding a "
            "secret salt.",
        ]
        block.items += [("column", column.name), ("hash", "sha256"), ("normalize", "email")]
        block.notes.append(f"user_id: {_q(column.name)} (email addresses, hashed)")
        block.used.append(column.name)
        return block
    people = {"customer", "user", "client", "visitor", "member", "buyer", "shopper"}
    ids = [
        (bool(c.words & {"id", "key", "number", "no"}), sample.fill(c), -c.index, c)
        for c in sample.columns
        if c.words & people and "name" not in c.words and sample.fill(c) >= 0.5
    ]
    if ids:
        column = max(ids, key=lambda e: e[:3])[3]
        block.comments.append(
            f"{_q(column.name)}: the name says it identifies the user (non-empty on "
            f"{_pct(round(sample.fill(column) * sample.full_rows), sample.full_rows)} of the "
            "sampled rows) -> hashed (sha256), so ids are never sent in clear."
        )
        block.items += [("column", column.name), ("hash", "sha256")]
        block.notes.append(f"user_id: {_q(column.name)} (customer id, hashed)")
        block.used.append(column.name)
        return block
    block.comments.append(
        "No email or customer/user id column found: name the column identifying the visitor "
        "(the Optimizely user id the experiments were bucketed with)."
    )
    block.items += [("column", _Todo("TODO: column holding the user id")), ("hash", "sha256")]
    block.notes.append("user_id: TODO (no email or customer id column)")
    return block


def _few_distinct(column: _Column) -> bool:
    """Few distinct values: at most 20, and at most half the non-empty cells (or 2)."""
    count = len(column.distinct)
    return 0 < count <= _FEW and count <= max(2, len(column.filled) // 2)


def _event_name(sample: _Sample) -> _Block:
    """event_name: an event/type column with few distinct values, else "purchase"."""
    block = _Block(None)
    not_names = {"id", "time", "date", "at", "timestamp", "ts", "key", "uuid", "count"}
    found = [
        (sample.fill(c), -c.index, c)
        for c in sample.columns
        if (c.words & {"event"} or c.words == {"type"} or c.words == {"event", "type"})
        and not c.words & not_names
        and _few_distinct(c)
        and sample.fill(c) >= 0.9
    ]
    if found:
        column = max(found, key=lambda e: e[:2])[2]
        values = ", ".join(_q(v) for v, _ in column.distinct.most_common(5))
        distinct = _plural(len(column.distinct), "distinct value")
        block.comments.append(
            f"{_q(column.name)}: {distinct} ({values}) -> the event name (n) of each row; "
            "they must be the keys of your Optimizely events."
        )
        block.items.append(("event_name", {"column": column.name}))
        block.notes.append(f"event_name: column {_q(column.name)}")
        block.used.append(column.name)
        return block
    block.comments.append(
        'A guess: no event/type column, so every row is sent as "purchase". Use the key of '
        "the Optimizely event these conversions belong to."
    )
    block.items.append(("event_name", {"value": "purchase"}))
    block.notes.append('event_name: "purchase" for every row (a guess)')
    return block


@dataclass
class _Amounts:
    """How a column's amounts are written."""

    numeric: int  # cells that are numbers once symbols and separators are removed
    bad: list[str]  # the other non-empty cells
    thousands: str | None
    decimal: str
    strip: str
    negative: int
    integers: bool
    example: str


def _amounts(column: _Column) -> _Amounts | None:
    """How the column's cells read as amounts, or None when they are not amounts."""
    cells = column.filled
    if not cells:
        return None
    seen = {ch for cell in cells for ch in cell if ch in _CURRENCY_SYMBOLS}
    strip = "".join(sorted(seen)) + (" " if seen and any(" " in c for c in cells) else "")
    bare = [c.translate({ord(ch): None for ch in strip}) for c in cells]
    decimal, thousands = ".", None
    if any(re.search(r"[0-9],[0-9]{1,2}$", c) for c in bare) and not any(
        re.search(r"\.[0-9]{1,2}$", c) for c in bare
    ):
        decimal = ","
        if any(re.fullmatch(r"[+-]?[0-9]{1,3}(?:\.[0-9]{3})+(?:,[0-9]*)?", c) for c in bare):
            thousands = "."
    elif any(re.fullmatch(r"[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?", c) for c in bare):
        thousands = ","
    numbers, bad = [], []
    for original, cell in zip(cells, bare, strict=True):
        number = _plain_number(cell, thousands, decimal)
        if number is None:
            bad.append(original)
        else:
            numbers.append(number)
    if len(numbers) / len(cells) < _MOST:
        return None
    return _Amounts(
        numeric=len(numbers),
        bad=bad,
        thousands=thousands,
        decimal=decimal,
        strip=strip,
        negative=sum(1 for n in numbers if n.startswith("-")),
        integers=all("." not in n for n in numbers),
        example=next((c for c in cells if thousands and thousands in c), cells[0]),
    )


_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def _plain_number(cell: str, thousands: str | None, decimal: str) -> str | None:
    """'1.234,56' -> '1234.56' (symbols already removed), or None when not a number."""
    if thousands:
        cell = cell.replace(thousands, "")
    cell = cell.replace(decimal, ".")
    return cell if _NUMBER.fullmatch(cell) else None


def _amount_of(cell: str, shape: _Amounts) -> float | None:
    """The number in a cell written as the shape says, or None."""
    bare = cell.translate({ord(ch): None for ch in shape.strip})
    number = _plain_number(bare, shape.thousands, shape.decimal)
    return None if number is None else float(number)


_AMOUNT_WORDS = _word_set("amount total price revenue value sum gross net subtotal")
_NOT_AMOUNT_WORDS = _word_set(
    "subtotal shipping tax taxes discount lineitem line item refunded refund fee fees compare "
    "duties quantity qty unit id experiment variation cost"
)


def _amount_score(column: _Column) -> int:
    """3 for 'Total'/'Amount', 2 for names with total/amount/revenue, 1 for price/value...;
    names of parts of a total (subtotal, shipping, line item price) score below zero."""
    words = column.words
    if words & _NOT_AMOUNT_WORDS:
        return -1
    if words in ({"total"}, {"amount"}, {"total", "price"}, {"revenue"}):
        return 3
    return 2 if words & {"total", "amount", "revenue"} else 1


def _currency(sample: _Sample) -> _Column | None:
    """A column of ISO 4217 codes (any letter case)."""
    found = []
    for column in sample.columns:
        named = bool(column.words & {"currency", "ccy", "cur"})
        share = column.share(lambda v: v.upper() in MINOR_UNITS)
        if share >= (0.9 if named else 0.98) and len(column.filled) > 0:
            found.append((named, -len(column.words), sample.fill(column), -column.index, column))
    return max(found, key=lambda f: f[:4])[4] if found else None


_Found = tuple[tuple[float, ...], _Column, _Amounts]


def _value(sample: _Sample, used: set[str]) -> _Block:
    """[value]: an amount column with its separators, symbols and currency or scale: by its
    name, else by content (the largest money-like column on most rows: the total)."""
    block = _Block("[value]")
    found = _amounts_by_name(sample)
    by_content = not found
    if by_content:
        found = _amounts_by_content(sample, used)
    if not found:
        block.header = None
        block.comments.append(
            "No amount column, by name (amount, total, price, revenue, value) or by content "
            "(numbers with decimals or a currency symbol): no value (v) is sent. Add [value] "
            'column = "..." if conversions have one.'
        )
        block.notes.append("value: none found")
        return block
    _, column, shape = found[0]
    block.comments.append(_amount_why(column, shape))
    others = [_q(f[1].name) for f in found[1:4]]
    if by_content:
        block.comments.append(
            "No column is named like an amount: chosen by its content"
            + (
                f", the largest amount of its row most often (a total), over {', '.join(others)}."
                if others
                else "."
            )
        )
    elif others:
        block.comments.append(
            f"Chosen over {', '.join(others)}: the conversion value is what the customer paid "
            "in all (not a part of it, a refund or a fee)."
        )
    _value_items(block, column, shape)
    _value_unit(sample, block, column, shape)
    if shape.negative:
        block.raw += [
            f"# {shape.negative:,} sampled amounts are negative (refunds?): they are rejected "
            "(value-negative)",
            "# unless allow_negative = true.",
        ]
    block.notes.append(f"value: {_q(column.name)}" + (" (found by content)" if by_content else ""))
    return block


def _amount_why(column: _Column, shape: _Amounts) -> str:
    """'Total': 100% of 40 non-empty sampled cells are amounts once ... removed."""
    filled = len(column.filled)
    why = (
        f"{_q(column.name)}: {_pct(shape.numeric, filled)} of {filled:,} non-empty sampled "
        "cells are amounts"
    )
    if shape.thousands or shape.strip:
        why += f" once {_strip_words(shape)} removed (e.g. {_q(shape.example)})"
    return why + "." + _rejected(shape.bad, "value-format")


def _value_items(block: _Block, column: _Column, shape: _Amounts) -> None:
    """column, thousands_separator, decimal_separator, strip."""
    block.items.append(("column", column.name))
    if shape.thousands:
        block.items.append(("thousands_separator", shape.thousands))
    if shape.decimal != ".":
        block.items.append(("decimal_separator", shape.decimal))
    if shape.strip:
        block.items.append(("strip", shape.strip))
    block.used.append(column.name)


def _amounts_by_name(sample: _Sample) -> list[_Found]:
    """Columns named like amounts holding numbers, best first (totals before their parts)."""
    found: list[_Found] = []
    for column in sample.columns:
        if not column.words & _AMOUNT_WORDS or column.temporal:
            continue
        shape = _amounts(column)
        if shape is not None:
            found.append(
                ((_amount_score(column), sample.fill(column), -column.index), column, shape)
            )
    return sorted(found, key=lambda f: f[0], reverse=True)


def _amounts_by_content(sample: _Sample, used: set[str]) -> list[_Found]:
    """Columns of money whatever their names ('462,06 €', '1.234,56', '19.99'), best first:
    the one holding the largest amount of its row most often (a total, not a fee or tax)."""
    money: list[tuple[_Column, _Amounts]] = []
    for column in sample.columns:
        if column.name in used or column.temporal or column.time_shape is not None:
            continue
        shape = _amounts(column)
        if shape is not None and _money_like(column, shape):
            money.append((column, shape))
    amounts = [[_amount_of(cell, shape) for cell in col.cells] for col, shape in money]
    found: list[_Found] = []
    for (column, shape), values in zip(money, amounts, strict=True):
        rows = [(r, v) for r, v in enumerate(values) if v is not None and sample.full[r]]
        largest = sum(1 for r, v in rows if _largest(v, [other[r] for other in amounts]))
        share = largest / len(rows) if rows else 0.0
        key = (share, _amount_score(column), sample.fill(column), -column.index)
        found.append((key, column, shape))
    return sorted(found, key=lambda f: f[0], reverse=True)


def _largest(value: float, row: list[float | None]) -> bool:
    """Whether the value is at least every other amount of its row."""
    return all(other is None or other <= value for other in row)


def _money_like(column: _Column, shape: _Amounts) -> bool:
    """Amounts of money, not counts or ids: a currency symbol or decimals, at most 3 of them
    on most cells (not coordinates or ratios)."""
    if shape.integers and not shape.strip:
        return False
    decimals = column.share(lambda v: not re.search(r"[.,][0-9]{4,}\b", v))
    return decimals >= _MOST


def _strip_words(shape: _Amounts) -> str:
    """'the thousands separator ',' and '$' are' for a comment."""
    parts = []
    if shape.thousands:
        parts.append(f"the thousands separator {_q(shape.thousands)}")
    if shape.strip:
        parts.append(" ".join(_q(c) for c in shape.strip))
    return " and ".join(parts) + (" is" if len(parts) == 1 and not shape.strip else " are")


def _value_unit(sample: _Sample, block: _Block, column: _Column, shape: _Amounts) -> None:
    """currency_column when the file has one, else a scale of 100 (or none for cents)."""
    currency = _currency(sample)
    if currency is not None:
        known = sorted({c.upper() for c in currency.filled if c.upper() in MINOR_UNITS})
        unknown = [c for c in currency.filled if c.upper() not in MINOR_UNITS]
        block.comments.append(
            f"{_q(currency.name)}: ISO 4217 codes ({', '.join(known[:6])}) -> the scale follows "
            "each row's currency (USD has 2 decimals: 19.99 -> 1999; JPY none)."
            + _rejected(unknown, "currency-unknown")
        )
        block.items.append(("currency_column", currency.name))
        block.used.append(currency.name)
        return
    if shape.integers and column.words & {"cents", "minor", "pence"}:
        block.comments.append("Whole numbers and the name says cents: sent as they are (no scale).")
        return
    block.comments.append(
        "No currency column: scale = 100 takes amounts in a currency with 2 decimals "
        "(19.99 -> 1999). Remove it if the amounts are already in cents."
    )
    block.items.append(("scale", 100))


@dataclass
class _TimeShape:
    """How a column's times are written."""

    format: str | None  # None: Arrow timestamps, no format needed
    parsed: int
    offset: bool  # every parsed cell carries an offset (or is epoch/Arrow time)
    example: str
    ambiguous: str | None = None  # the other day/month order, when the sample cannot tell


def _time_shape(column: _Column) -> _TimeShape | None:
    """The format of the column's times, or None when most cells are not times."""
    cells = column.filled
    if not cells:
        return None
    if column.temporal:
        return _TimeShape(None, len(cells), column.zoned, cells[0])
    iso = [c for c in cells if _reads(c, "iso")]
    if len(iso) / len(cells) >= _MOST and any("T" in c or _HAS_OFFSET.fullmatch(c) for c in iso):
        offset = all(_HAS_OFFSET.fullmatch(c) for c in iso)
        return _TimeShape("iso", len(iso), offset, iso[0])
    epoch = [c for c in cells if _EPOCH.fullmatch(c) and _plausible_epoch(c)]
    if len(epoch) / len(cells) >= _MOST and column.words & _TIME_WORDS:
        return _TimeShape("epoch", len(epoch), True, epoch[0])
    return _strptime_shape(cells)


_TIME_WORDS = _word_set(
    "time timestamp ts date datetime at created paid ordered purchased when epoch occurred "
    "converted utc"
)


def _plausible_epoch(cell: str) -> bool:
    """Epoch digits whose unit (by magnitude, as 'auto' decides) lands in 1995-2100."""
    number = float(cell)
    for limit, divisor in ((1e11, 1), (1e14, 1e3), (1e17, 1e6)):
        if number < limit:
            return 788_918_400 <= number / divisor <= 4_102_444_800
    return 788_918_400 <= number / 1e9 <= 4_102_444_800


def _strptime_shape(cells: list[str]) -> _TimeShape | None:
    """The strptime pattern parsing most cells; day/month order decided by values > 12."""
    probe = [c for c in cells[:5] if _DATE_LIKE.match(c)]
    if not probe:
        return None
    candidates = [f for f in _STRPTIME_FORMATS if any(_parses(c, f) for c in probe)]
    counts = {f: sum(1 for c in cells if _parses(c, f)) for f in candidates}
    if not counts:
        return None
    best = max(counts, key=lambda f: (counts[f], -_STRPTIME_FORMATS.index(f)))
    if counts[best] / len(cells) < _MOST:
        return None
    example = next(c for c in cells if _parses(c, best))
    shape = _TimeShape(best, counts[best], "%z" in best, example)
    for order, swapped in _DAY_MONTH.items():
        other = swapped + best.removeprefix(order)
        if best.startswith(order) and counts.get(other, 0) == counts[best]:
            shape.ambiguous = other
    return shape


def _reads(cell: str, fmt: str) -> bool:
    """Whether the importer reads the cell with this time format ('iso', 'epoch', strptime)."""
    if fmt == "epoch":
        return bool(_EPOCH.fullmatch(cell))
    if fmt == "iso":
        if not _ISO.fullmatch(cell):
            return False
        try:
            datetime.fromisoformat(cell)
        except ValueError:
            return False
        return True
    return _parses(cell, fmt)


def _parses(cell: str, fmt: str) -> bool:
    """Whether Python's strict strptime reads the cell with this pattern."""
    try:
        datetime.strptime(cell, fmt)
    except ValueError:
        return False
    return True


_LATER_EVENTS = _word_set(
    "cancelled canceled fulfilled shipped updated modified refunded due delivered closed "
    "expires expiry birth birthday dob signup archived deleted"
)


def _time_score(column: _Column) -> int:
    """3 for 'Paid at'-like names, 2 for creation/order times, 1 for others, 0 for times of
    later events (cancelled, fulfilled, updated...)."""
    words = column.words
    if words & _LATER_EVENTS:
        return 0
    if words & {"paid", "purchased", "converted", "conversion"}:
        return 3
    return 2 if words & _TIME_WORDS else 1


def _time(sample: _Sample) -> _Block:
    """[time]: the time column, its format, and a timezone when the times have no offset."""
    block = _Block("[time]")
    found = []
    for column in sample.columns:
        shape = column.time_shape
        if shape is not None:
            clock = not _day_only(column, shape)
            key = (_time_score(column), clock, sample.fill(column), -column.index)
            found.append((key, column, shape))
    if not found:
        block.comments.append(
            "No column of dates or times found: name the column holding when each conversion "
            "happened (and set timezone if its times have no UTC offset)."
        )
        block.items.append(("column", _Todo("TODO: column holding the event time")))
        block.notes.append("time: TODO (no date/time column)")
        return block
    found.sort(key=lambda f: f[0], reverse=True)
    _, column, shape = found[0]
    filled = len(column.filled)
    described = "Arrow timestamps" if shape.format is None else f"format {_q(shape.format)}"
    if column.dates:
        described = "Arrow dates"
    block.comments.append(
        f"{_q(column.name)}: {_pct(shape.parsed, filled)} of {filled:,} non-empty sampled cells "
        f"read as {described} (e.g. {_q(shape.example)})."
        + _rejected(
            [c for c in column.filled if shape.format and not _reads(c, shape.format)],
            "time-format",
        )
    )
    others = [f[1] for f in found[1:] if f[0][0] < 3]
    if _time_score(column) == 3 and others:
        block.comments.append(
            f"Chosen over {_q(others[0].name)}: the conversion happened when it was paid."
        )
    empty = sample.full_rows - round(sample.fill(column) * sample.full_rows)
    if empty:
        block.comments.append(
            f"It is empty on {empty:,} of {sample.full_rows:,} sampled {_row_kind(sample)}: "
            "those rows are rejected (time-missing) unless a filter leaves them out."
        )
    block.items.append(("column", column.name))
    block.used.append(column.name)
    if shape.format is not None:
        fmt: str = shape.format
        if shape.ambiguous:
            block.comments.append(
                f"No day above 12 in the sample: {_q(shape.format)} and {_q(shape.ambiguous)} "
                "both fit. Which one is it?"
            )
            fmt = _Todo(f"TODO: {shape.format} or {shape.ambiguous}")
        block.items.append(("format", fmt))
    block.notes.append(f"time: {_q(column.name)} ({described})")
    if _day_only(column, shape):
        _dates_only(sample, block, column, shape)
    _timezone(block, column, shape, _zone_column(sample, set(block.used)))
    return block


def _day_only(column: _Column, shape: _TimeShape) -> bool:
    """Whether the column holds dates without a time of day ('28/02/2025', Arrow dates)."""
    if column.dates:
        return True
    fmt = shape.format
    return fmt is not None and "%" in fmt and not any(d in fmt for d in ("%H", "%I", "%M"))


_CLOCK = re.compile(r"[0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?(?:\s?[AaPp]\.?[Mm]\.?)?")
_CLOCK_FORMATS = ("%H:%M:%S", "%H:%M", "%I:%M:%S %p", "%I:%M %p", "%H:%M:%S.%f")
_CLOCK_WORDS = _word_set("time uhrzeit zeit heure hora ora tijd")


def _dates_only(sample: _Sample, block: _Block, column: _Column, shape: _TimeShape) -> None:
    """Dates without a time of day: a comment, and a TODO format when another column holds
    the times of day (the schema reads one column: combine them first, or accept days)."""
    clock = _clock_column(sample, column)
    if clock is None:
        block.comments.append(
            "These are dates without a time of day: every event is sent at midnight of its day."
        )
        return
    day = shape.format or "auto"
    both = f"{day} {_clock_format(clock)}" if shape.format else "auto"
    times = _q(clock.filled[0])
    block.comments.insert(
        0,
        f"WARNING: {_q(column.name)} holds dates only (e.g. {_q(shape.example)}) and "
        f"{_q(clock.name)} holds the times of day (e.g. {times}). The schema reads ONE time "
        "column and cannot combine two: as it stands every event would be sent at midnight. "
        f'Combine them into one column first (e.g. in pandas: df["When"] = df[{_py(column)}] + '
        f'" " + df[{_py(clock)}]), then column = "When" and format = "{both}"; or accept day '
        f'precision: format = "{day}".',
    )
    todo = _Todo(
        f"TODO: combine {_q(column.name)} and {_q(clock.name)} into one column first (see "
        f"above), or accept day precision: {day}"
    )
    block.items = [(k, todo if k == "format" else v) for k, v in block.items]
    if not any(k == "format" for k, _ in block.items):
        block.items.append(("format", todo))
    block.notes.append(
        f"time: {_q(column.name)} holds dates only and {_q(clock.name)} the times of day: TODO "
        "combine them into one column, or accept day precision"
    )
    block.used.append(clock.name)


def _py(column: _Column) -> str:
    """A column name as a Python string literal, for a comment."""
    return json.dumps(column.name, ensure_ascii=False)


def _clock_column(sample: _Sample, day: _Column) -> _Column | None:
    """A column of times of day ('22:50:00', '9:05 PM') beside a column of dates."""
    found = [
        (bool(c.words & _CLOCK_WORDS), sample.fill(c), -c.index, c)
        for c in sample.columns
        if c is not day
        and c.filled
        and sample.fill(c) >= 0.5
        and c.share(lambda v: bool(_CLOCK.fullmatch(v))) >= _MOST
    ]
    return max(found, key=lambda f: f[:3])[3] if found else None


def _clock_format(column: _Column) -> str:
    """The strptime pattern reading most of a column's times of day."""
    return max(_CLOCK_FORMATS, key=lambda f: sum(1 for c in column.filled if _parses(c, f)))


_ZONE_ABBREVIATIONS = _word_set(
    "UTC GMT PST PDT MST MDT CST CDT EST EDT AKST AKDT HST AST ADT NST NDT WET WEST CET CEST "
    "EET EEST MSK IST JST KST HKT SGT AWST ACST AEST AEDT NZST NZDT BST BRT ART"
)
_UTC_OFFSET = re.compile(
    r"(?:UTC|GMT)\s?[+-][0-9]{1,2}(?::?[0-9]{2})?|[+-][0-9]{2}:?[0-9]{2}", re.IGNORECASE
)


@cache
def _iana_zones() -> frozenset[str]:
    """The IANA zone names with a region ('Europe/Berlin'), as the system knows them."""
    return frozenset(z for z in zoneinfo.available_timezones() if "/" in z)


def _is_zone(value: str) -> bool:
    """'CET', 'PST', 'Europe/Berlin', 'UTC+01:00': a time zone."""
    return (
        value.upper() in _ZONE_ABBREVIATIONS
        or value in _iana_zones()
        or bool(_UTC_OFFSET.fullmatch(value))
    )


def _zone_column(sample: _Sample, used: set[str]) -> _Column | None:
    """A column naming each row's time zone ('TimeZone': CET, PST, Europe/Berlin)."""
    found = [
        (bool(c.words & {"zone", "timezone", "tz"}), sample.fill(c), -c.index, c)
        for c in sample.columns
        if c.name not in used and c.filled and sample.fill(c) >= 0.5 and c.share(_is_zone) >= 0.9
    ]
    return max(found, key=lambda f: f[:3])[3] if found else None


def _timezone(
    block: _Block, column: _Column, shape: _TimeShape, zones: _Column | None = None
) -> None:
    """Times with an offset need no zone; else UTC if the name says so, else a TODO. A column
    of per-row zones is pointed out: the schema takes one zone for every row."""
    if shape.offset:
        if shape.format in ("iso",) or (shape.format and "%z" in shape.format):
            block.comments.append("Every time carries its UTC offset: no timezone needed.")
        return
    says = ""
    if zones is not None:
        values = ", ".join(v for v, _ in zones.distinct.most_common(3))
        says = f" ({_q(zones.name)} says {values})"
        block.comments.append(
            f"{_q(zones.name)} holds a time zone on each row (e.g. {values}), but the schema "
            "takes one timezone for every row: if it is always the same zone, give its IANA "
            "name below; if it varies, convert the times to one zone (or append their UTC "
            "offsets) first, e.g. while combining columns."
        )
        block.notes.append(f"time: {_q(zones.name)} holds a time zone per row; one zone is used")
        block.used.append(zones.name)
    if "utc" in column.words:
        block.comments.append("The times have no offset and the column name says UTC.")
        block.items.append(("timezone", "UTC"))
        return
    what = "The times"
    if column.temporal:
        what = "Arrow dates" if column.dates else "Arrow timestamps without a time zone"
    block.comments.append(f"{what} have no UTC offset: in which IANA time zone were they written?")
    block.items.append(
        ("timezone", _Todo(f"TODO: IANA zone of these times{says}, e.g. America/New_York"))
    )


def _experiments(sample: _Sample, datafile: Datafile | None = None) -> list[_Block]:
    """[[experiments]] column pairs (ids, else keys of the datafile), else [buckets] from a
    cookie column, else a TODO."""
    pairs = _pairs(sample) or _key_pairs(sample, datafile)
    cookie = _cookie(sample)
    if pairs:
        if cookie is not None:
            pairs[-1].raw += [
                f"# {_q(cookie.column.name)} also holds optimizelyBuckets cookies; to read "
                "them too (an experiment named",
                "# twice is rejected as experiment-duplicate):",
                *(f"# {line}" for line in _render([_buckets_block(cookie)]).splitlines()),
            ]
        if len(pairs) == 1:
            pairs += _pair_filter(sample, pairs[0])
        return pairs
    if cookie is not None:
        blocks = [_buckets_block(cookie)]
        if cookie.hits < cookie.rows:
            blocks.append(_cookie_filter(cookie))
        return blocks
    in_text = _text_pairs(sample)
    if in_text is not None:
        return _text_pair_blocks(in_text)
    block = _Block("[[experiments]]")
    block.comments.append(
        "No experiment/variation columns, no exp=<id>;var=<id> text and no optimizelyBuckets "
        "cookie found: every event needs an experiment. Give constant ids here, or "
        "experiment_column/variation_column, or a [buckets] table instead."
    )
    block.items += [
        ("experiment", _Todo("TODO: experiment id (digits)")),
        ("variation", _Todo("TODO: variation id (digits)")),
    ]
    block.notes.append("experiments: TODO (no experiment columns or cookie)")
    return [block]


def _pairs(sample: _Sample) -> list[_Block]:
    """One [[experiments]] per experiment column, paired with the closest variation column."""
    experiments = [
        c
        for c in sample.columns
        if c.words & {"experiment", "exp"}
        and c.filled
        and c.share(lambda v: bool(_DIGITS.fullmatch(v))) >= 0.9
    ]
    variations = [
        c
        for c in sample.columns
        if c.words & {"variation", "variant", "var"}
        and c.filled
        and c.share(lambda v: bool(_VARIATION.fullmatch(v))) >= 0.9
    ]
    blocks = []
    for experiment in experiments:
        if not variations:
            break
        rest = experiment.words - {"experiment", "exp"}
        variation = max(variations, key=lambda v: (len(rest & v.words), -v.index))
        variations.remove(variation)
        both = sum(1 for e, v in zip(experiment.cells, variation.cells, strict=True) if e and v)
        block = _Block("[[experiments]]")
        block.comments.append(
            f"{_q(experiment.name)} and {_q(variation.name)}: experiment and variation ids "
            f"(digits), both filled on {both:,} of {sample.rows:,} sampled rows. required = true: "
            "a row without them is rejected (experiment-missing)."
        )
        block.items += [
            ("experiment_column", experiment.name),
            ("variation_column", variation.name),
            ("required", True),
        ]
        block.notes.append(f"experiments: {_q(experiment.name)} / {_q(variation.name)}")
        block.used += [experiment.name, variation.name]
        blocks.append(block)
    return blocks


def _pair_filter(sample: _Sample, pair: _Block) -> list[_Block]:
    """A filter leaving out rows without an experiment id (never in an experiment)."""
    name = pair.used[0]
    column = next(c for c in sample.columns if c.name == name)
    missing = sum(1 for cell in column.cells if not cell)
    if not missing:
        return []
    block = _Block("[[filter]]")
    block.comments.append(
        f"{missing:,} of {sample.rows:,} sampled rows have no experiment id in {_q(name)} "
        "(never in an experiment?): only rows with one are sent, the others are counted as "
        "filtered. A row with an experiment id but a missing or broken variation id is still "
        "rejected."
    )
    block.items += [("column", name), ("empty", False)]
    block.notes.append(f"filter: only rows with an experiment id in {_q(name)}")
    return [block]


@dataclass
class _TextPair:
    """Experiment and variation ids written inside a text cell: 'exp=1002;var=21'."""

    column: _Column
    experiment: str  # the key and separator as most often written, e.g. 'exp='
    variation: str  # e.g. 'var='
    hits: int  # rows holding both
    rows: int
    example: str


_EXPERIMENT_IN_TEXT = re.compile(r"\b(exp|experiment)(\s*[=:]\s*)[0-9]+", re.IGNORECASE)
_VARIATION_IN_TEXT = re.compile(r"\b(var|variation)(\s*[=:]\s*)[0-9]+", re.IGNORECASE)


def _text_pairs(sample: _Sample) -> _TextPair | None:
    """The column holding the most 'exp=<digits>' + 'var=<digits>' pairs inside text."""
    best: _TextPair | None = None
    for column in sample.columns:
        experiments: Counter[str] = Counter()
        variations: Counter[str] = Counter()
        example = ""
        for cell in column.filled:
            exp = _EXPERIMENT_IN_TEXT.search(cell)
            var = _VARIATION_IN_TEXT.search(cell)
            if exp and var:
                experiments[exp.group(1) + exp.group(2)] += 1
                variations[var.group(1) + var.group(2)] += 1
                example = example or cell
        hits = sum(experiments.values())
        if hits and (best is None or hits > best.hits):
            exp_key, var_key = experiments.most_common(1)[0][0], variations.most_common(1)[0][0]
            best = _TextPair(column, exp_key, var_key, hits, sample.rows, example)
    return best


def _key_pattern(key: str) -> str:
    """A regex for a key as written: 'exp=' -> 'exp=', 'exp: ' -> 'exp\\s*:\\s*'."""
    name = re.escape(key.rstrip(" \t=:"))
    separator = key[len(key.rstrip(" \t=:")) :]
    if separator == separator.strip():
        return name + re.escape(separator)
    return name + r"\s*" + re.escape(separator.strip()) + r"\s*"


def _text_pair_blocks(found: _TextPair) -> list[_Block]:
    """[[experiments]] reading both ids out of one text column, and a filter leaving out the
    rows without them when some lack them."""
    block = _Block("[[experiments]]")
    column = found.column.name
    experiment, variation = _key_pattern(found.experiment), _key_pattern(found.variation)
    block.comments.append(
        f"{_q(column)}: {found.hits:,} of {found.rows:,} sampled rows hold an experiment and a "
        f"variation id inside the text (e.g. {_q(found.example)}): the extract patterns take "
        "the digits after each key. A row where one of them is missing is rejected "
        "(extract-no-match)."
    )
    block.items += [
        ("experiment_column", column),
        ("variation_column", column),
        ("experiment_extract", _Regex(experiment + r"(\d+)")),
        ("variation_extract", _Regex(variation + r"(\d+)")),
    ]
    block.notes.append(f"experiments: inside {_q(column)} ({found.experiment}<id>)")
    block.used.append(column)
    if found.hits == found.rows:
        return [block]
    rule = _Block("[[filter]]")
    rule.comments.append(
        f"{found.rows - found.hits:,} of {found.rows:,} sampled rows have no experiment id in "
        f"{_q(column)} (empty, or other text): only rows holding one are sent, the others are "
        "counted as filtered (not rejected)."
    )
    rule.items += [("column", column), ("matches", _Regex(rf"(?s).*{experiment}\d+.*"))]
    rule.notes.append(f"filter: only rows with an experiment id in {_q(column)}")
    return [block, rule]


@dataclass
class _Cookie:
    """Where the optimizelyBuckets assignments are, and how they are written."""

    column: _Column
    format: str  # "cookie" or "json"
    hits: int  # rows holding an assignment
    rows: int
    example: str
    name: str | None = None  # 'optimizelyBuckets' as spelled in the cell, when inside text
    separator: str | None = None  # what joins the name and the cookie: ': ' or '='


_IN_TEXT = re.compile(r"(optimizelyBuckets)(\s*[:=]\s*)(%7B[^\s;&]*?%7D)", re.IGNORECASE)


def _cookie(sample: _Sample) -> _Cookie | None:
    """The column holding the most optimizelyBuckets assignments, found by its cells."""
    best: _Cookie | None = None
    for column in sample.columns:
        forms: Counter[tuple[str, str | None, str | None]] = Counter()
        example = ""
        for cell in column.filled:
            form = _cookie_form(cell)
            if form is not None:
                forms[form] += 1
                example = example or cell
        if not forms:
            continue
        (fmt, name, separator), hits = forms.most_common(1)[0]
        found = _Cookie(column, fmt, hits, sample.rows, example, name, separator)
        if best is None or hits > best.hits:
            best = found
    return best


def _cookie_form(cell: str) -> tuple[str, str | None, str | None] | None:
    """('cookie'|'json', name, separator) when the cell holds an assignment, else None."""
    match = _IN_TEXT.search(cell)
    if match and _assignments(unquote(match.group(3))):
        return "cookie", match.group(1), match.group(2)
    if re.fullmatch(r"(?i)%7B.*%7D", cell) and _assignments(unquote(cell)):
        return "cookie", None, None
    if cell.startswith("{") and _assignments(cell):
        return "json", None, None
    return None


def _assignments(text: str) -> bool:
    """A JSON object of experiment id -> variation id, with at least one pair."""
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return (
        isinstance(data, dict)
        and bool(data)
        and all(
            _DIGITS.fullmatch(k) and isinstance(v, str) and _VARIATION.fullmatch(v)
            for k, v in data.items()
        )
    )


def _buckets_block(cookie: _Cookie) -> _Block:
    """[buckets] for the cookie column, with an extract pattern when it sits inside text."""
    block = _Block("[buckets]")
    column = cookie.column.name
    what = "URL-encoded JSON" if cookie.format == "cookie" else "JSON"
    block.comments.append(
        f"{_q(column)}: {cookie.hits:,} of {cookie.rows:,} sampled rows hold an "
        f"optimizelyBuckets assignment ({what} of experiment id -> variation id)."
    )
    block.items += [("column", column), ("format", cookie.format)]
    if cookie.name is not None and cookie.separator is not None:
        pattern = f"{cookie.name}{cookie.separator}" + (
            r"(\S+)" if cookie.separator.strip() != "=" else r"([^\s;&]+)"
        )
        block.comments.append(
            f"The cookie sits inside other text (e.g. {_q(cookie.example)}): extract keeps "
            "what follows its name."
        )
        block.items.append(("extract", _Regex(pattern)))
    block.notes.append(f"buckets: {_q(column)} ({cookie.format})")
    block.used.append(column)
    return block


def _cookie_filter(cookie: _Cookie) -> _Block:
    """A filter keeping only rows whose cookie column holds an assignment."""
    block = _Block("[[filter]]")
    column = cookie.column.name
    missing = cookie.rows - cookie.hits
    block.comments.append(
        f"{missing:,} of {cookie.rows:,} sampled rows have no assignment in {_q(column)} "
        "(empty, or other text): only rows holding one are sent, the others are counted as "
        "filtered (not rejected)."
    )
    block.items.append(("column", column))
    if cookie.name is not None:
        block.items.append(("matches", _Regex(f"(?s).*{cookie.name}.*")))
    elif len(cookie.column.filled) == cookie.hits:
        block.items.append(("empty", False))
    elif cookie.format == "cookie":
        block.items.append(("matches", _Regex("(?i)%7B.*%7D")))
    else:
        block.items.append(("matches", _Regex(r"(?s)\{.*\}")))
    block.notes.append(f"filter: only rows with an assignment in {_q(column)}")
    return block


_NOT_STATUS_WORDS = _word_set("fulfillment fulfilment shipping billing delivery risk")


def _status(sample: _Sample, used: set[str]) -> _Block:
    """A [[filter]] on a status column, found by name or by content: keep the successful
    rows (or a TODO to say which); when there is none, a comment saying every row is sent."""
    found = _status_candidates(sample, used)
    if not found:
        return _no_status()
    column, named = found[0]
    counts = Counter(column.cells)
    listing = ", ".join(
        f"{_q(v) if v else '(empty)'} {n:,}" for v, n in sorted(counts.items(), key=_by_count)
    )
    block = _Block("[[filter]]")
    if not named:
        block.comments.append(
            f"{_q(column.name)} looks like a status by its content: a few distinct short texts "
            "on most rows, not numbers, dates, emails or currency codes."
        )
    block.comments.append(
        f"{_q(column.name)} in {sample.rows:,} sampled rows: {listing}. Rows with any value "
        "not listed in 'in' are counted as filtered, never sent."
    )
    keep = sorted((v for v in column.distinct if _is_success(v)), key=str.lower)
    block.items.append(("column", column.name))
    if keep:
        block.items.append(("in", keep))
        block.notes.append(f"filter: {_q(column.name)} in {json.dumps(keep, ensure_ascii=False)}")
    else:
        if not named:
            block.comments.append(
                "None of its values is a known success word (Paid, Completed, Bezahlt, Payé, "
                "Pagado...). If it is not a status at all, delete this [[filter]]."
            )
        values = ", ".join(sorted(column.distinct, key=lambda v: (-column.distinct[v], v)))
        block.items.append(("in", [_Todo(f"TODO: which of {values} are conversions?")]))
        block.notes.append(f"filter: {_q(column.name)}: TODO which values are conversions")
    block.used.append(column.name)
    return block


def _no_status() -> _Block:
    """A comment (and a note) that no status column was found: every row is sent."""
    block = _Block(None)
    block.comments.append(
        "No status column found (a column of a few values such as Paid / Refunded / Failed): "
        "every row will be sent (that passes the filters above, if any). If some rows are not "
        "conversions (refunds, failed or cancelled orders), add a [[filter]], e.g. column = "
        '"Status" with in = ["Paid"].'
    )
    block.notes.append(
        "no status column found: every row will be sent; if some rows are not conversions "
        "add a [[filter]]"
    )
    return block


def _status_candidates(sample: _Sample, used: set[str]) -> list[tuple[_Column, bool]]:
    """Status columns, best first, each with whether its name says so. A name such as
    'Status' or 'Payment State' is enough; other columns must look like one by content."""
    found = []
    for column in sample.columns:
        if column.name in used or column.words & _NOT_STATUS_WORDS or column.temporal:
            continue
        named = _status_named(column)
        if not (named and _few_distinct(column)) and not _status_like(sample, column):
            continue
        success = any(_is_success(v) for v in column.distinct)
        known = any(_fold(v) in _STATUS_WORDS for v in column.distinct)
        preferred = bool(column.words & {"financial", "payment"} or column.words == {"status"})
        key = (success, named, known, preferred, sample.fill(column), -column.index)
        found.append((key, column, named))
    found.sort(key=lambda f: f[0], reverse=True)
    return [(column, named) for _, column, named in found]


def _status_named(column: _Column) -> bool:
    """Whether the name says status: 'Status', 'Financial Status', 'state', 'Payment State'."""
    words = column.words
    return "status" in words or words in ({"state"}, {"payment", "state"}, {"order", "state"})


def _status_like(sample: _Sample, column: _Column) -> bool:
    """A status by content, whatever its name: at most 12 distinct short texts, some
    repeated, on most rows; not numbers, dates, emails, currency codes or ids. A single value
    counts only when it is a known status word."""
    values = list(column.distinct)
    if not 0 < len(values) <= _FEW_STATUSES or not _few_distinct(column):
        return False
    if len(values) == 1 and _fold(values[0]) not in _STATUS_WORDS:
        return False  # one value everywhere tells no rows apart (unless it is 'Refunded')
    if len(values) == len(column.filled) or sample.fill(column) <= 0.5:
        return False  # every value once: names or ids, not a status
    if not all(re.search(r"[^\W\d_]", v) and len(v) <= 40 for v in values):
        return False  # numbers, amounts, long free text
    if column.time_shape is not None:
        return False
    tests: list[Callable[[str], bool]] = [
        lambda v: bool(_EMAIL.fullmatch(v)),
        lambda v: v.upper() in MINOR_UNITS,
        lambda v: any(p.fullmatch(v) for p, _, _ in _ID_SHAPES),
    ]
    return all(column.share(test) < 0.5 for test in tests)


def _is_success(value: str) -> bool:
    """Whether the whole value is a success word in a common language, ignoring case and
    accents ('Paid', 'abgeschlossen', 'Payée', 'COMPLETADO')."""
    return _fold(value) in _SUCCESS_WORDS


def _goal_ids(sample: _Sample) -> list[_Block]:
    """[goal_ids]: a column named like goal ids holding digits separated by commas."""
    for column in sample.columns:
        goals = column.share(lambda v: bool(_GOAL_IDS.fullmatch(v))) == 1.0
        if "goal" not in column.words or not goals:
            continue
        block = _Block("[goal_ids]")
        required = sample.fill(column) == 1.0
        block.comments.append(
            f"{_q(column.name)}: goal ids (digits separated by commas)"
            + (" on every sampled row: required." if required else ".")
        )
        block.items.append(("column", column.name))
        if required:
            block.items.append(("required", True))
        block.notes.append(f"goal_ids: {_q(column.name)}")
        block.used.append(column.name)
        return [block]
    return []


_GOAL_IDS = re.compile(r"[0-9]+(?:,[0-9]+)*")


def _by_count(item: tuple[str, int]) -> tuple[int, bool, str]:
    """Most frequent first, the empty value last among equals."""
    return -item[1], item[0] == "", item[0]


def _digits_id(sample: _Sample, key: str, word: str, datafile: Datafile | None) -> _Block:
    """project_id / account_id: a column named so holding digits, else the datafile's, else
    a TODO."""
    block = _Block(None)
    for column in sample.columns:
        digits = column.share(lambda v: bool(_DIGITS.fullmatch(v))) == 1.0
        if word in column.words and digits and sample.fill(column) >= 0.99:
            block.comments.append(f"{_q(column.name)}: digits on every sampled row.")
            block.items.append((key, {"column": column.name}))
            block.notes.append(f"{key}: column {_q(column.name)}")
            block.used.append(column.name)
            return block
    if datafile is not None:
        value = datafile.project_id if word == "project" else datafile.account_id
        block.comments.append(f"{key}: the datafile's (revision {datafile.revision}).")
        block.items.append((key, {"value": value}))
        block.notes.append(f"{key}: {value} from the datafile")
        return block
    block.items.append((key, {"value": _Todo(f"TODO: your {word} id (digits)")}))
    block.notes.append(f"{key}: TODO")
    return block


# --- with a datafile: keys ---------------------------------------------------------------------


def _keys_share(column: _Column, keys: frozenset[str]) -> float:
    return column.share(lambda v: v in keys) if keys else 0.0


def _key_column(sample: _Sample, keys: frozenset[str], skip: set[str]) -> _Column | None:
    """The column whose non-empty cells are most often among ``keys`` (at least 80%: a few
    may be typos, which check then rejects)."""
    scored = [
        (_keys_share(c, keys), -c.index, c)
        for c in sample.columns
        if c.name not in skip and c.filled
    ]
    best = max(scored, key=lambda s: s[:2], default=None)
    return best[2] if best is not None and best[0] >= _MOST else None


def _key_pairs(sample: _Sample, datafile: Datafile | None) -> list[_Block]:
    """An [[experiments]] pair of key columns: experiment keys, and variation keys or ids."""
    if datafile is None:
        return []
    experiment = _key_column(sample, frozenset(e.key for e in datafile.experiments), set())
    if experiment is None:
        return []
    variations = [v for e in datafile.experiments for v in e.variations]
    skip = {experiment.name}
    by_key = _key_column(sample, frozenset(v.key for v in variations), skip)
    by_id = None if by_key else _key_column(sample, frozenset(v.id for v in variations), skip)
    variation = by_key or by_id
    if variation is None:
        return []
    kind = "variation_key_column" if by_key else "variation_column"
    block = _Block("[[experiments]]")
    block.comments.append(
        f"{_q(experiment.name)}: experiment keys of the datafile; {_q(variation.name)}: "
        f"variation {'keys' if by_key else 'ids'} of them. Keys are resolved to ids through "
        "--datafile; one it does not have is a reject (experiment-unknown, variation-unknown)."
    )
    block.items += [
        ("experiment_key_column", experiment.name),
        (kind, variation.name),
        ("required", True),
    ]
    block.notes.append(f"experiments: keys in {_q(experiment.name)} / {_q(variation.name)}")
    block.used += [experiment.name, variation.name]
    return [block]


def _event_keys(sample: _Sample, datafile: Datafile | None) -> list[_Block]:
    """[goal_ids] from a column of the datafile's event keys (often the event name's)."""
    if datafile is None:
        return []
    column = _key_column(sample, frozenset(e.key for e in datafile.events), set())
    if column is None:
        return []
    block = _Block("[goal_ids]")
    required = sample.fill(column) == 1.0
    block.comments.append(
        f"{_q(column.name)}: event keys of the datafile; each key's event id is sent as g "
        "(an unknown key is a reject: goal-unknown)"
        + (", on every sampled row: required." if required else ".")
    )
    block.items.append(("event_key_column", column.name))
    if required:
        block.items.append(("required", True))
    block.notes.append(f"goal_ids: event keys in {_q(column.name)}")
    block.used.append(column.name)
    return [block]


def _attributes(sample: _Sample, datafile: Datafile | None) -> list[_Block]:
    """[[segments]] for the columns named like an attribute key of the datafile."""
    if datafile is None:
        return []
    by_name = {key.casefold(): key for key in datafile.attributes}
    blocks = []
    for column in sample.columns:
        key = by_name.get(column.name.strip().casefold())
        if key is None or not column.filled:
            continue
        block = _Block("[[segments]]")
        block.comments.append(
            f"{_q(column.name)}: named like the datafile's attribute {_q(key)} (segment id "
            f"{datafile.attributes[key]}); empty cells leave the segment out."
        )
        block.items += [("attribute_key", key), ("column", column.name)]
        block.notes.append(f"segments: {_q(column.name)} as attribute {_q(key)}")
        block.used.append(column.name)
        blocks.append(block)
    return blocks


# --- writing the TOML ------------------------------------------------------------------------


def _write(
    sample: _Sample,
    source: Source,
    options: CsvOptions | None,
    schema_path: str,
    given: Any,
    datafile: Datafile | None = None,
) -> Guess:
    """Run every guess and render the schema."""
    project = _digits_id(sample, "project_id", "project", datafile)
    account = _digits_id(sample, "account_id", "account", datafile)
    if not (project.used and account.used) and datafile is None:
        project.comments.append(
            "project_id and account_id: from your Optimizely project settings (digits)."
        )
    user = _user(sample)
    event = _event_name(sample)
    time = _time(sample)
    value = _value(sample, _used(project, account, user, event, time))
    experiments = _experiments(sample, datafile)
    goals = _goal_ids(sample) or _event_keys(sample, datafile)
    segments = _attributes(sample, datafile)
    status = _status(
        sample, _used(project, account, user, event, time, value, *experiments, *goals, *segments)
    )
    ids = _ids(
        sample,
        _used(project, account, user, event, time, value, *experiments, *goals, *segments, status),
    )
    filters = [b for b in experiments if b.header == "[[filter]]"]
    experiments = [b for b in experiments if b.header != "[[filter]]"]
    checks = _Block("[checks]")
    checks.raw += [
        "# The defaults; uncomment to change. oldest / max_age_days refuse older times.",
        "# oldest = 2024-01-01",
        "# max_age_days = 730",
        "# max_future_seconds = 300",
        "# old_after_days = 365",
        "# max_url_bytes = 8000",
    ]
    blocks = [
        _Block(None, items=[("kind", "conversion")]),
        project,
        account,
        event,
        ids,
        user,
        *experiments,
        *goals,
        value,
        time,
        status,
        *filters,
        *segments,
        checks,
        *_csv(options),
    ]
    head = _header(sample, source, schema_path, given, datafile)
    text = head + _render(blocks)
    todos = _todo_keys(blocks)
    notes = _sample_notes(sample, source, options)
    for block in blocks:
        notes += block.notes
    if todos:
        notes.append(f"{len(todos)} TODO(s) to fill in: {', '.join(todos)}")
    return Guess(text=text, todos=todos, notes=notes)


def _used(*blocks: _Block) -> set[str]:
    """The columns these blocks read or account for: later guesses leave them out."""
    return {column for block in blocks for column in block.used}


def _csv(options: CsvOptions | None) -> list[_Block]:
    """A [csv] table for CSV options given other than the defaults."""
    if options is None:
        return []
    changed = options.model_dump(exclude_defaults=True)
    if not changed:
        return []
    return [_Block("[csv]", items=sorted(changed.items()))]


def _header(
    sample: _Sample, source: Source, schema_path: str, given: Any, datafile: Datafile | None
) -> str:
    """The opening comment: where the guess comes from and how to check it."""
    columns = len(sample.columns)
    lines = [
        f"# Schema guessed by `event-backfill init` from {sample.name}",
        f"# ({sample.rows:,} sampled rows, {columns:,} columns). Every guess says why; review "
        "them all,",
        "# replace each TODO, then check the file with:",
    ]
    if isinstance(given, str | Path) or (
        isinstance(given, list | tuple) and all(isinstance(s, str | Path) for s in given)
    ):
        files = " ".join(shlex.quote(str(i.name)) for i in source.inputs)
        more = f" --datafile {shlex.quote(datafile.source)}" if datafile is not None else ""
        lines.append(f"#   event-backfill check {files} --schema {shlex.quote(schema_path)}{more}")
    else:
        more = f", datafile={json.dumps(datafile.source)}" if datafile is not None else ""
        lines.append(f"#   importer.check(frame, schema={json.dumps(schema_path)}{more})")
    lines.append("# Every key is explained by `event-backfill schema --json-schema`.")
    return "\n".join(_comment_safe(line) for line in lines) + "\n\n"


def _sample_notes(sample: _Sample, source: Source, options: CsvOptions | None) -> list[str]:
    """What was read."""
    notes = [f"read {sample.rows:,} rows of {len(sample.columns):,} columns from {source.name}"]
    if sample.delimiter is not None and sample.delimiter != ",":
        given = options is not None and options.delimiter != "auto"
        how = "as given" if given else "found by [csv] delimiter = auto"
        notes[0] += f" (delimiter {sample.delimiter!r}, {how})"
    if sample.malformed:
        notes.append(f"{sample.malformed:,} malformed CSV records in the sample (csv-malformed)")
    if sample.full_rows < sample.rows:
        notes.append(
            f"{sample.rows - sample.full_rows:,} sampled rows fill only a few columns "
            "(line-item continuation rows?): the guesses look at the other rows"
        )
    return notes


def _render(blocks: Sequence[_Block]) -> str:
    """The blocks as TOML: top-level keys first (TOML needs them before any table)."""
    out: list[str] = []
    for block in blocks:
        if (block.header is not None or not block.items) and out and out[-1] != "":
            out.append("")
        out += _comment_lines(block.comments)
        if block.header is not None:
            out.append(block.header)
        out += [f"{key} = {_toml(value)}" for key, value in block.items]
        out += [_comment_safe(line) for line in block.raw]
    return "\n".join(out).rstrip("\n") + "\n"


def _comment_lines(texts: Iterable[str]) -> list[str]:
    """Comment paragraphs wrapped to the line length, each line starting with '# '."""
    lines = []
    for text in texts:
        wrapped = textwrap.wrap(_comment_safe(text), _LINE - 2, break_on_hyphens=False)
        lines += [f"# {line}" for line in wrapped]
    return lines


def _comment_safe(text: str) -> str:
    """Text that may sit in a TOML comment: no control characters (tabs become spaces)."""
    return "".join(c if c.isprintable() else " " if c == "\t" else repr(c)[1:-1] for c in text)


def _toml(value: Any) -> str:
    """A TOML value: strings, regexes as literal strings, integers, booleans, lists, dicts."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, _Regex) and "'" not in value and _comment_safe(value) == value:
        return f"'{value}'"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def _todo_keys(blocks: Sequence[_Block]) -> list[str]:
    """The dotted key of every TODO value, in file order ('filter[0].in')."""
    keys: list[str] = []
    arrays: Counter[str] = Counter()
    for block in blocks:
        prefix = ""
        if block.header is not None:
            name = block.header.strip("[]")
            if block.header.startswith("[["):
                prefix = f"{name}[{arrays[name]}]."
                arrays[name] += 1
            else:
                prefix = f"{name}."
        for key, value in block.items:
            keys += [prefix + key + suffix for suffix in _todo_suffixes(value)]
    return keys


def _todo_suffixes(value: Any) -> list[str]:
    """'' when the value is a TODO (or a list holding one), '.value' for a TODO in a dict."""
    if isinstance(value, _Todo) or (
        isinstance(value, list) and any(isinstance(v, _Todo) for v in value)
    ):
        return [""]
    if isinstance(value, dict):
        return [f".{k}" for k, v in value.items() if isinstance(v, _Todo)]
    return []
