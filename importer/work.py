"""What the sender carries: rows ready to send (:class:`Work`) and rows that failed.

Built here from a mapped batch's events table, outside both the ledger (which knows row
positions only) and the sender (which knows requests only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from yarl import URL


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
