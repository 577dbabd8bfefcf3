"""What the sender carries: rows ready to send (:class:`Work`) and rows that failed; and
what the ledger's receipt needs of them (:class:`ReceiptRows`).

Built here from a mapped batch's events table, outside both the ledger (which knows row
positions, and for the receipt their groups, only) and the sender (which knows requests only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from yarl import URL

# A receipt group of rows: their experiment/variation pairs (sorted), event name and currency
# (None without a currency column). A row counts once in each of its pairs, on its UTC day.
Group = tuple[tuple[tuple[str, str], ...], str, str | None]


@dataclass
class Work:
    """Rows ready to send, in input order."""

    positions: list[int]
    # As built and previewed, sent byte for byte: yarl URLs (encoded=True) for aiohttp, the
    # text itself for a transport that takes text (see work_of).
    urls: Sequence[URL | str]
    names: list[str]
    values: list[int | None]
    times: list[int]
    file: str
    rows: list[int]
    lines: list[int | None]
    currencies: list[str | None] | None = None  # ISO 4217 per row, for totals per currency

    def __len__(self) -> int:
        return len(self.urls)


@dataclass
class Failure:
    """A row that failed permanently."""

    position: int
    file: str
    row: int
    line: int | None
    url: str
    attempts: int
    status: int | None
    error: str
    currency: str | None = None


def work_of(
    file: str,
    events: pa.Table,
    keep: np.ndarray | None = None,
    positions: list[int] | None = None,
    *,
    text_urls: bool = False,
) -> Work | None:
    """Valid rows (those where ``keep`` is true) of one file as sender Work.

    ``positions``: those of the kept rows, when the caller has them already. ``text_urls``:
    keep the URLs as text (for the curl transport: a yarl URL made only to be turned back
    into text would cost it ~3 µs a request).
    """
    if keep is not None and not keep.all():
        events = events.filter(pa.array(keep))
    if events.num_rows == 0:
        return None
    return Work(
        positions=positions if positions is not None else events.column("position").to_pylist(),
        # yarl.URL objects are built here, in the ledger's thread, not on the event loop:
        # that parsing overlaps the loop's socket calls instead of adding to them.
        urls=_urls(events.column("url").to_pylist(), text_urls),
        names=events.column("n").to_pylist(),
        values=events.column("v").to_pylist(),
        currencies=_currencies(events),
        times=events.column("time").to_pylist(),
        file=file,
        rows=events.column("row").to_pylist(),
        lines=events.column("line").to_pylist(),
    )


def _urls(urls: list[str], text: bool) -> Sequence[URL | str]:
    return urls if text else [URL(url, encoded=True) for url in urls]


def _currencies(events: pa.Table) -> list[str | None] | None:
    """Each row's currency, or None when the schema has no currency column."""
    if "currency" not in events.column_names:
        return None
    column = events.column("currency")
    return column.to_pylist() if column.null_count < events.num_rows else None


@dataclass
class ReceiptRows:
    """The receipt groups and days of rows about to be sent (:mod:`importer.ledger.receipt`
    counts them when they are acknowledged).

    Attributes:
        positions: the rows, increasing.
        codes: per row, its index in ``groups``.
        days: per row, the UTC day of its time (days since 1970-01-01).
        values: per row, its v (0 where v is null: the row counts, its value adds nothing).
        groups: the distinct groups of these rows (a handful: ids and names repeat).
    """

    positions: np.ndarray
    codes: np.ndarray
    days: np.ndarray
    values: np.ndarray
    groups: list[Group]

    def __len__(self) -> int:
        return len(self.positions)


def receipt_rows(events: pa.Table, keep: np.ndarray | None = None) -> ReceiptRows | None:
    """The receipt groups of the kept rows of a chunk's events (columns position, x, n,
    time, v, currency), or None if none is kept.

    Vectorized: x, n and currency are dictionary-encoded and their codes combined into one
    integer per row, so Python runs once per distinct group, not per row; the day is
    ``time // 86400`` (floor: UTC days before 1970 too). :func:`receipt_group` is the
    per-event reference.
    """
    if keep is not None and not keep.all():
        events = events.filter(pa.array(keep))
    if events.num_rows == 0:
        return None
    x = _encoded(events.column("x"))
    names = _encoded(events.column("n"))
    currencies = _encoded(events.column("currency"))
    # A null currency (no currency column) is code 0, the dictionary's entries 1...
    combined = (x[0] * len(names[1]) + names[0]) * (len(currencies[1]) + 1) + currencies[0] + 1
    # The combined codes are few and small (at most rows**3): count them, no sort.
    distinct = np.flatnonzero(np.bincount(combined))
    lookup = np.zeros(int(distinct[-1]) + 1, np.int64)
    lookup[distinct] = np.arange(len(distinct))
    codes = lookup[combined]
    groups = []
    for value in distinct.tolist():
        rest, currency = divmod(value, len(currencies[1]) + 1)
        x_code, name = divmod(rest, len(names[1]))
        groups.append(
            (
                pairs_of(x[1][x_code]),
                names[1][name],
                currencies[1][currency - 1] if currency else None,
            )
        )
    return ReceiptRows(
        events.column("position").to_numpy(),
        codes,
        events.column("time").to_numpy() // 86_400,
        pc.fill_null(events.column("v"), 0).to_numpy().astype(np.int64),
        groups,
    )


def receipt_group(x: str, name: str, currency: str | None) -> Group:
    """The receipt group of one event: the per-event reference of :func:`receipt_rows`."""
    return pairs_of(x), name, currency


@lru_cache(maxsize=4096)
def pairs_of(x: str) -> tuple[tuple[str, str], ...]:
    """The (experiment, variation) pairs of an x fragment, sorted: "x3=4&x1=2" -> (("1",
    "2"), ("3", "4")). Ids are digits (and _ in variations), so the fragment is not quoted."""
    pairs = []
    for part in x.split("&"):
        experiment, _, variation = part.partition("=")
        pairs.append((experiment.removeprefix("x"), variation))
    return tuple(sorted(pairs))


def _encoded(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """A column's dictionary codes (int64, -1 where null) and its distinct values."""
    if column.null_count == len(column):  # e.g. no currency column: no encoding to do
        return np.full(len(column), -1, np.int64), []
    encoded = pc.dictionary_encode(column.combine_chunks())
    indices = encoded.indices
    if indices.null_count:
        indices = pc.fill_null(indices, -1)
    return indices.to_numpy().astype(np.int64), encoded.dictionary.to_pylist()
