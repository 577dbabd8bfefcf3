"""The reject rules: a stable code for each, and the message a user sees.

Codes never change meaning once released; reports, rejects files and tests use them. Each
message says what is wrong and what to do about it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

RULES: dict[str, str] = {
    "csv-malformed": "the record does not have the header's number of columns, or a quote is "
    "not closed (other records are inside it); check its quoting and delimiter",
    "project-id-digits": "project id must be ASCII digits only (it becomes part of the host name)",
    "project-id-length": "project id is too long for the endpoint's host name (a DNS label holds "
    "63 bytes, a host name 253: at most 63 digits with the default endpoint)",
    "account-id-digits": "account id must be ASCII digits only",
    "user-id-empty": "user id is empty (or has no visible character); every event needs a user",
    "user-id-control": "user id contains control or invisible characters (tab, newline, NUL, "
    "zero-width...); clean the cell",
    "user-id-email": 'user id looks like an email address; set user_id.hash = "sha256" '
    "(or user_id.allow_email = true)",
    "event-name-empty": "event name is empty (or has no visible character)",
    "event-name-control": "event name contains control or invisible characters (tab, newline, "
    "NUL, zero-width...); clean the cell",
    "experiment-missing": "no experiment/variation pair: every event needs at least one",
    "experiment-id-digits": "experiment id must be digits",
    "experiment-duplicate": "the same experiment id comes twice (two columns, or a column and "
    "the cookie); keep one",
    "variation-id-format": "variation id must be digits, or digits joined by '_'",
    "buckets-invalid": "not a JSON object of experiment id -> variation id; if the cell holds "
    "more than the cookie (e.g. 'optimizelyBuckets: %7B...%7D'), set buckets.extract to a "
    "regular expression with one group around the cookie",
    "extract-no-match": "the cell does not match the field's extract pattern; fix the cell, "
    "or the pattern (or add a [[filter]] so rows without it are not conversions)",
    "goal-ids-missing": "goal ids are empty",
    "goal-ids-format": "goal ids must be ASCII digits separated by commas, no spaces, "
    "e.g. 12345,4324234",
    "value-missing": "value is empty; fill it or set value.required = false",
    "value-format": "value is not a number of ASCII digits; set value.thousands_separator / "
    "value.strip if the cell has separators, spaces or currency symbols",
    "value-not-finite": "value is NaN or infinite",
    "value-rounding": "value is not a whole number after scaling; fix the amount or set "
    "value.rounding",
    "value-overflow": "value is too large for a 64-bit integer after scaling",
    "value-negative": "value is negative; set value.allow_negative = true to send refunds",
    "currency-unknown": "currency is empty or not an ISO 4217 code",
    "time-missing": "time is empty; a missing time is never replaced by 'now'",
    "time-format": "time does not match the schema's time.format",
    "time-no-zone": "time has no offset and the schema has no time.timezone; set one",
    "time-dst-gap": "local time does not exist in this zone (DST gap); fix it or set "
    'time.on_dst_gap = "shift_forward"',
    "time-dst-fold": "local time happens twice in this zone (DST fold); fix it or set "
    'time.on_dst_fold = "earliest" or "latest"',
    "time-too-old": "time is older than checks.oldest / checks.max_age_days",
    "time-future": "time is in the future beyond checks.max_future_seconds",
    "segment-missing": "segment value is empty",
    "segment-control": "segment value contains control or invisible characters (tab, newline, "
    "NUL, zero-width...), or nothing visible",
    "dedupe-key-empty": "a dedupe_key column is empty, so the event cannot be sent once only",
    "url-too-long": "the request would be longer than checks.max_url_bytes",
}


Raw: TypeAlias = "pa.Array | Callable[[], pa.Array] | None"


@dataclass
class Violation:
    """Rows of one batch that break one rule, in one column."""

    mask: np.ndarray
    rule: str
    column: str
    raw: pa.Array | None


@dataclass
class Violations:
    """Collects the rule breaks of one batch; a row with any of them is rejected."""

    size: int
    items: list[Violation] = field(default_factory=list)

    def add(self, mask: np.ndarray | pa.Array, rule: str, column: str, raw: Raw) -> None:
        """Record that the rows where ``mask`` is true break ``rule`` in ``column``.

        ``raw`` holds the cells as the user wrote them, for the rejects file; it may be a
        function, called only when some row breaks the rule (formatting can be costly).
        """
        if rule not in RULES:
            raise KeyError(f"unknown rule {rule!r}")
        array = _to_numpy_mask(mask)
        if array.any():
            cells = raw() if callable(raw) else raw
            self.items.append(Violation(array, rule, column, cells))

    def exclude(self, rows: np.ndarray) -> None:
        """Forget every rule break of these rows (they are not judged: e.g. filtered)."""
        for item in self.items:
            item.mask &= ~rows
        self.items = [item for item in self.items if item.mask.any()]

    def bad(self) -> np.ndarray:
        """True for each row that breaks at least one rule."""
        out = np.zeros(self.size, dtype=bool)
        for item in self.items:
            out |= item.mask
        return out


def _to_numpy_mask(mask: np.ndarray | pa.Array) -> np.ndarray:
    if isinstance(mask, np.ndarray):
        return np.array(mask, dtype=bool)  # a copy: callers may reuse their array
    filled = pc.fill_null(mask, False)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=bool)
