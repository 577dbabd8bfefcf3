"""A receipt in any form, as the lines the HTML report charts and lists.

A :class:`~importer.ledger.Receipt`, a DataFrame such as :func:`importer.api.receipt`
returns, or a list of dicts with its columns. No Bokeh here: the way in
(:mod:`importer.html_report`), the page and the charts all read these lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from importer.ledger.receipt import Receipt

if TYPE_CHECKING:
    import pandas as pd

ReceiptLike: TypeAlias = "Receipt | pd.DataFrame | Sequence[Mapping[str, Any]]"

_EPOCH = date(1970, 1, 1)


class Line(NamedTuple):
    """One line of a receipt."""

    experiment: str
    variation: str
    day: date
    event: str
    currency: str | None
    events: int
    value: int


def receipt_lines(receipt: ReceiptLike | None) -> list[Line]:
    """A receipt's lines, from a Receipt, a DataFrame or records (dicts)."""
    if receipt is None:
        return []
    if isinstance(receipt, Receipt):
        return [
            Line(e, v, _EPOCH + timedelta(days=d), n, c or None, k, value)
            for e, v, d, n, c, k, value in receipt.lines
        ]
    records: Iterable[Mapping[str, Any]]
    if isinstance(receipt, Sequence):
        records = receipt
    else:  # a DataFrame: its NaN and NA become None
        frame = receipt.astype(object)
        records = [
            {str(k): v for k, v in row.items()}
            for row in frame.where(frame.notna(), None).to_dict("records")
        ]
    return [
        Line(
            str(row["experiment"]),
            str(row["variation"]),
            _as_day(row["day"]),
            str(row["event"]),
            str(row["currency"]) if row.get("currency") else None,
            int(row["events"]),
            int(row["value"]),
        )
        for row in records
    ]


def _as_day(value: Any) -> date:
    if isinstance(value, datetime):  # pandas' Timestamp too
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, int):
        return _EPOCH + timedelta(days=value)
    return date.fromisoformat(str(value)[:10])
