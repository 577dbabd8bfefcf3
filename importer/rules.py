"""The reject rules and warnings: a stable code for each, and the message a user sees.

Codes never change meaning once released; reports, rejects files and tests use them. Each
message says what is wrong and what to do about it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

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
    # With --datafile: ids the Event API accepts (200) and never counts.
    "project-mismatch": "project id is not the datafile's projectId: the event would go to "
    "another project; fix the id, or pass this project's datafile",
    "account-mismatch": "account id is not the datafile's accountId; fix the id, or pass this "
    "account's datafile",
    "experiment-unknown": "experiment id (or key) is not an experiment of the datafile: the "
    "Event API would accept the event and never count it; fix it, or pass a newer datafile",
    "variation-unknown": "variation id (or key) is not a variation of the row's experiment in "
    "the datafile (another experiment's?); fix it, or pass a newer datafile",
    "goal-unknown": "goal id (or event key) is not an event of the datafile: the Event API "
    "would accept it and never count it; fix it, or pass a newer datafile",
}

# Warnings: counted and shown, never rejected (the row is sent all the same).
WARNINGS: dict[str, str] = {
    "goal-not-in-experiment": "the goal (event) is attached to none of the row's experiments "
    "in the datafile (events[].experimentIds), so the conversion will not count; add the "
    "event to the experiment's metrics, or check the goal id",
    "experiment-not-running": "the experiment's status in the datafile is not Running (paused, "
    "archived, not started...); check that it is the experiment you mean",
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
    warnings: list[Violation] = field(default_factory=list)  # never make a row bad

    def add(self, mask: np.ndarray | pa.Array, rule: str, column: str, raw: Raw) -> None:
        """Record that the rows where ``mask`` is true break ``rule`` in ``column``.

        ``raw`` holds the cells as the user wrote them, for the rejects file; it may be a
        function, called only when some row breaks the rule (formatting can be costly).
        """
        if rule not in RULES:
            raise KeyError(f"unknown rule {rule!r}")
        self._append(self.items, mask, rule, column, raw)

    def warn(self, mask: np.ndarray | pa.Array, rule: str, column: str, raw: Raw) -> None:
        """Record a warning (see WARNINGS) for the rows where ``mask`` is true."""
        if rule not in WARNINGS:
            raise KeyError(f"unknown warning {rule!r}")
        self._append(self.warnings, mask, rule, column, raw)

    @staticmethod
    def _append(
        into: list[Violation], mask: np.ndarray | pa.Array, rule: str, column: str, raw: Raw
    ) -> None:
        array = _to_numpy_mask(mask)
        if array.any():
            cells = raw() if callable(raw) else raw
            into.append(Violation(array, rule, column, cells))

    def exclude(self, rows: np.ndarray) -> None:
        """Forget every rule break and warning of these rows (not judged: e.g. filtered)."""
        for item in (*self.items, *self.warnings):
            item.mask &= ~rows
        self.items = [item for item in self.items if item.mask.any()]
        self.warnings = [item for item in self.warnings if item.mask.any()]

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


class Tally:
    """Rows per warning over a whole run, with the first examples of each; thread-safe.

    Fed the warnings table of each mapped batch (the rejects table's layout), in order.
    """

    def __init__(self, examples: int = 3) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[dict[str, Any]]] = {}
        self._keep = examples
        self._lock = threading.Lock()

    def add(self, table: pa.Table) -> None:
        """Count the rows of one batch's warnings table per rule."""
        if not table.num_rows:
            return
        counted = table.group_by("rule").aggregate([("position", "count_distinct")])
        with self._lock:
            for rule, n in zip(
                counted.column("rule").to_pylist(),
                counted.column("position_count_distinct").to_pylist(),
                strict=True,
            ):
                self.counts[rule] += n
                have = self.examples.setdefault(rule, [])
                if len(have) < self._keep:
                    rows = table.filter(pc.equal(table.column("rule"), rule))
                    have += rows.slice(0, self._keep - len(have)).to_pylist()

    def lines(self) -> list[str]:
        """One line per warning: the count, what it means, where (for a report's warnings)."""
        out = []
        for rule, n in sorted(self.counts.items()):
            where = []
            for ex in self.examples.get(rule, []):
                place = f"line {ex['line']}" if ex.get("line") is not None else f"row {ex['row']}"
                column = f", column {ex['column']}" if ex.get("column") else ""
                where.append(f"{ex['file']} {place}{column}: {ex['value']!r}")
            out.append(
                f"{rule}: {n:,} row{'s' if n != 1 else ''} (a warning: not rejected): "
                f"{WARNINGS[rule]}; e.g. " + "; ".join(where)
            )
        return out
