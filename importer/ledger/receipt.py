"""The receipt: what a run delivered, per experiment, variation, UTC day, event name and
currency (events, and the sum of ``v``): the numbers a user compares with the results page.

The ledger keeps it exact across kill -9 and resume by writing it in the very transaction
that settles the rows it counts: a row is counted when, and only when, it is settled as
sent, and a resumed run adds to the same run's totals. A row counts once in each of its
experiment/variation pairs; a null ``v`` counts as an event and adds 0. Rows that failed,
were rejected, or were skipped as unknown (``--unknown skip``: they may have arrived) are
not in it; a row sent twice (the printed duplicate bound) is in it once.

How, at ~30,000 rows/s: a row's *group* (its pairs, event name and currency) is one of a
handful, numbered per run (table ``receipt_groups``); a chunk's groups are found when it is
leased (:func:`importer.work.receipt_rows`, Arrow), and :class:`Tally` keeps each unsettled
row's group, day and value in numpy arrays. A flush turns the rows it settles into totals per
(group, day) with numpy and appends them to ``receipt_log`` as one blob: one statement,
whatever the number of days and groups. Every :data:`FOLD_FLUSHES` flushes, at close, and at
open after a crash, the log is folded into ``receipt_days`` (a few upserts per day and group)
in one transaction. Reading joins the three; pairs are expanded only then.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from importer.errors import LedgerError
from importer.work import Group, ReceiptRows, receipt_group

if TYPE_CHECKING:
    import pyarrow as pa

RECEIPT_COLUMNS = ("experiment", "variation", "day", "event", "currency", "events", "value")
FOLD_FLUSHES = 256  # flushes logged before the log is folded into receipt_days
# A line of the receipt: experiment, variation, UTC day number, event name, currency.
Line = tuple[str, str, int, str, str | None]
Totals = dict[Line, list[int]]  # a line -> [events, value]
_EPOCH = date(1970, 1, 1)
_MAX_CHUNKS = 16  # more chunks with unsettled rows than this are merged into one
_INT64 = 2**63
_FLOAT_EXACT = 2**53
NO_DELTA = np.empty((0, 4), np.int64)

_UPSERT = (
    "INSERT INTO receipt_days (run_id, grp, day, events, value) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id, grp, day) DO UPDATE SET "
    "events = events + excluded.events, value = value + excluded.value"
)


def aggregate(codes: np.ndarray, days: np.ndarray, events: np.ndarray, values: np.ndarray) -> Any:
    """Totals per (group, day): an int64 array of rows [group, day, events, value], exact.

    Raises:
        LedgerError: a total of v beyond 64 bits (more than 9.2e18 minor units).
    """
    if not len(codes):
        return NO_DELTA
    first = int(days.min())
    span = int(days.max()) - first + 1
    size = (int(codes.max()) + 1) * span
    if size <= 8 * len(codes) + 4096 and max(_bound(events), _bound(values)) < _FLOAT_EXACT:
        # The usual case, few groups and days: counting by one small key, no sort. Sums
        # of floats are exact below 2**53 (checked above), then turned back into integers.
        key = codes * span + (days - first)
        counts = np.bincount(key, weights=events, minlength=size)
        present = np.flatnonzero(np.bincount(key, minlength=size))
        sums = np.bincount(key, weights=values, minlength=size)[present]
        return np.column_stack(
            (present // span, present % span + first, counts[present], sums)
        ).astype(np.int64)
    order = np.lexsort((days, codes))
    codes, days, events, values = codes[order], days[order], events[order], values[order]
    starts = np.flatnonzero(np.r_[True, (codes[1:] != codes[:-1]) | (days[1:] != days[:-1])])
    return np.column_stack(
        (codes[starts], days[starts], _sums(events, starts), _sums(values, starts))
    ).astype(np.int64)


def _bound(values: np.ndarray) -> int:
    """No sum of any of ``values`` is larger than this in magnitude."""
    return max(int(values.max()), -int(values.min())) * len(values)


def _sums(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sums of the runs of ``values`` beginning at ``starts``, exact or refused."""
    if _bound(values) < _INT64:
        return np.add.reduceat(values, starts)  # cannot overflow
    ends = np.r_[starts[1:], len(values)]
    sums = [sum(values[a:b].tolist()) for a, b in zip(starts, ends, strict=True)]
    if any(not -_INT64 <= total < _INT64 for total in sums):
        raise LedgerError(
            "a receipt total of v is beyond 64 bits (more than 9.2e18 minor units in one "
            "line): the ledger cannot record it; check the value column's scale"
        )
    return np.array(sums, np.int64)


class _Chunk:
    """The groups, days and values of one leased chunk's rows, and which are unsettled."""

    __slots__ = ("codes", "days", "live", "positions", "remaining", "values")

    def __init__(
        self, positions: np.ndarray, codes: np.ndarray, days: np.ndarray, values: np.ndarray
    ) -> None:
        if len(positions) > 1 and not bool((np.diff(positions) > 0).all()):
            order = np.argsort(positions, kind="stable")
            positions, codes, days, values = (a[order] for a in (positions, codes, days, values))
        self.positions, self.codes, self.days, self.values = positions, codes, days, values
        self.live = np.ones(len(positions), dtype=bool)
        self.remaining = len(positions)


class Tally:
    """The receipt groups of the rows leased and not yet settled (in the ledger's thread),
    and what the rows a flush settles add, per group and day."""

    def __init__(self, groups: list[Group] | None = None) -> None:
        self.groups: list[Group] = list(groups or [])  # numbered as the ledger numbered them
        self._index: dict[Group, int] = {group: i for i, group in enumerate(self.groups)}
        self._chunks: list[_Chunk] = []

    def code(self, group: Group) -> int:
        """The group's number in this run (a new one gets the next)."""
        code = self._index.get(group)
        if code is None:
            code = self._index[group] = len(self.groups)
            self.groups.append(group)
        return code

    def expect(self, rows: ReceiptRows | None) -> None:
        """Rows about to be sent: remember each one's group, day and value until it settles."""
        if rows is None or not len(rows):
            return
        lut = np.array([self.code(group) for group in rows.groups], dtype=np.int64)
        self._chunks.append(_Chunk(rows.positions, lut[rows.codes], rows.days, rows.values))
        if len(self._chunks) > _MAX_CHUNKS:
            self._merge()

    def take(self, positions: list[int]) -> tuple[Any, int]:
        """What the rows at ``positions`` (acknowledged now) add, per group and day (see
        :func:`aggregate`), and how many of them it counts: a row whose group was never
        expected, or that was counted already, is not."""
        codes, days, values = self._select(positions)
        return aggregate(codes, days, np.ones(len(codes), np.int64), values), len(codes)

    def forget(self, positions: list[int]) -> None:
        """Rows settled otherwise (failed) or released: they will not be counted here."""
        self._select(positions)

    def lines(self, delta: np.ndarray) -> Totals:
        """Totals per (group, day) as receipt lines: each group's pairs expanded."""
        totals: Totals = {}
        for code, day, n, value in delta.tolist():
            pairs, event, currency = self.groups[code]
            for experiment, variation in pairs:
                add(totals, (experiment, variation, day, event, currency), n, value)
        return totals

    def _select(self, positions: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The codes, days and values of the unsettled rows at ``positions``, now settled."""
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        if positions and self._chunks:
            wanted = np.sort(np.fromiter(positions, np.int64, len(positions)))
            wanted = wanted[np.r_[True, wanted[1:] != wanted[:-1]]]  # each once
            for chunk in self._chunks:
                ends = (chunk.positions[0], chunk.positions[-1] + 1)
                low, high = wanted.searchsorted(ends).tolist()
                if low == high:
                    continue
                part = wanted[low:high]  # within the chunk's first and last position
                at = chunk.positions.searchsorted(part)
                at = at[chunk.positions[at] == part]
                at = at[chunk.live[at]]  # never counted twice
                if len(at):
                    chunk.live[at] = False
                    chunk.remaining -= len(at)
                    found.append((chunk.codes[at], chunk.days[at], chunk.values[at]))
            self._chunks = [chunk for chunk in self._chunks if chunk.remaining]
        if not found:
            empty = np.empty(0, np.int64)
            return empty, empty, empty
        codes, days, values = zip(*found, strict=True)
        return np.concatenate(codes), np.concatenate(days), np.concatenate(values)

    def _merge(self) -> None:
        """One chunk of every unsettled row (rows parked or retrying keep old chunks alive)."""
        chunks = self._chunks
        self._chunks = [
            _Chunk(*(np.concatenate([getattr(c, a)[c.live] for c in chunks]) for a in _ARRAYS))
        ]


_ARRAYS = ("positions", "codes", "days", "values")


class Deltas:
    """Totals per (group, day) gathered flush by flush, folded into one array now and then."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []

    def add(self, delta: np.ndarray) -> None:
        """Another flush's totals."""
        if len(delta):
            self._parts.append(delta)
            if len(self._parts) >= FOLD_FLUSHES:
                self._parts = [self.total()]

    def total(self) -> Any:
        """Everything added, one row per (group, day)."""
        if not self._parts:
            return NO_DELTA
        rows = np.concatenate(self._parts)
        return aggregate(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3])

    def __len__(self) -> int:
        return len(self._parts)


class RunReceipt:
    """A run's receipt in the ledger file, as one process adds to it.

    Call :meth:`write` inside the transaction that settles the rows, and :meth:`committed`
    after it commits (nothing changes in memory if it fails). Opening folds what a process
    that died left in the log (call it inside a transaction).
    """

    def __init__(self, db: sqlite3.Connection, run_id: int) -> None:
        self.db, self.run_id = db, run_id
        self.tally = Tally(_groups(db, run_id))
        self._saved = len(self.tally.groups)  # groups [0, saved) are in receipt_groups
        self._logged = Deltas()  # in receipt_log since the last fold
        self._seq = 0
        self._pending: tuple[np.ndarray, bool, int] | None = None
        left = _logged(db, run_id)
        if len(left):
            self._upsert(left)
            db.execute("DELETE FROM receipt_log WHERE run_id = ?", (run_id,))

    def write(self, delta: np.ndarray, *, fold: bool = False) -> None:
        """Record a flush's totals (in the caller's transaction): new groups, and the totals
        as one blob in the log; or, every FOLD_FLUSHES flushes (or ``fold``), everything
        logged folded into receipt_days and the log emptied."""
        new = self.tally.groups[self._saved :]
        if new:
            self.db.executemany(
                "INSERT OR IGNORE INTO receipt_groups VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (self.run_id, code, experiment, variation, event, currency or "")
                    for code, (pairs, event, currency) in enumerate(new, self._saved)
                    for experiment, variation in pairs
                ],
            )
        fold = fold or len(self._logged) + 1 >= FOLD_FLUSHES
        if fold:
            everything = Deltas()
            everything.add(self._logged.total())
            everything.add(delta)
            self._upsert(everything.total())
            self.db.execute("DELETE FROM receipt_log WHERE run_id = ?", (self.run_id,))
        elif len(delta):
            self.db.execute(
                "INSERT INTO receipt_log VALUES (?, ?, ?)",
                (self.run_id, self._seq, delta.astype("<i8").tobytes()),
            )
        self._pending = (delta, fold, len(self.tally.groups))

    def committed(self) -> None:
        """The transaction of the last :meth:`write` committed."""
        if self._pending is None:
            return
        delta, folded, saved = self._pending
        self._pending = None
        self._saved = saved
        if folded:
            self._logged = Deltas()
        elif len(delta):
            self._logged.add(delta)
            self._seq += 1

    def _upsert(self, totals: np.ndarray) -> None:
        self.db.executemany(_UPSERT, [(self.run_id, *row) for row in totals.tolist()])


def add(totals: Totals, line: Line, events: int, value: int) -> None:
    """Add to one line of a receipt being summed."""
    slot = totals.get(line)
    if slot is None:
        totals[line] = [events, value]
    else:
        slot[0] += events
        slot[1] += value


def of_urls(tally: Tally, rows: list[tuple[str, str | None]]) -> Any:
    """Totals per (group, day) of recorded requests (url, currency), as ``retry`` sends
    them again: the group and day are read back from the request."""
    codes, days, values = [], [], []
    for url, currency in rows:
        params = parse_qsl(urlsplit(url).query, keep_blank_values=True)
        fields = dict(params)
        x = "&".join(f"{name}={value}" for name, value in params if name.startswith("x"))
        codes.append(tally.code(receipt_group(x, fields.get("n", ""), currency)))
        days.append(int(fields.get("time", "0")) // 86_400)
        values.append(int(fields["v"]) if fields.get("v") else 0)
    arrays = (np.array(a, np.int64) for a in (codes, days, [1] * len(codes), values))
    return aggregate(*arrays)


@dataclass(frozen=True)
class Receipt:
    """What a run delivered: a line per experiment, variation, UTC day, event, currency.

    Attributes:
        run: the run's id in the ledger (None: a run without a ledger file).
        lines: (experiment, variation, day number, event, currency, events, value), sorted.
        sent: rows the run settled as sent.
        unreceipted: rows sent before this ledger kept receipts (by an older version): they
            are in ``sent`` but not in the lines.
        unknown_skipped: rows settled by ``--unknown skip``: they may have arrived, and are
            not in the lines.
    """

    run: int | None
    lines: tuple[tuple[str, str, int, str, str | None, int, int], ...]
    sent: int = 0
    unreceipted: int = 0
    unknown_skipped: int = 0

    @classmethod
    def of(cls, run: int | None, totals: Totals, **counts: int) -> Receipt:
        """A receipt of summed totals."""
        lines = [(*line, n, value) for line, (n, value) in totals.items()]
        return cls(run, tuple(sorted(lines, key=_order)), **counts)

    def records(self) -> list[dict[str, Any]]:
        """A dict per line, the day as ISO text (``--json``)."""
        return [
            dict(zip(RECEIPT_COLUMNS, (*line[:2], iso_day(line[2]), *line[3:]), strict=True))
            for line in self.lines
        ]

    def folded(self) -> list[tuple[str, str, str, str | None, int, int]]:
        """Days folded: a line per experiment, variation, event and currency."""
        totals: dict[tuple[str, str, str, str | None], list[int]] = {}
        for experiment, variation, _day, event, currency, n, value in self.lines:
            slot = totals.setdefault((experiment, variation, event, currency), [0, 0])
            slot[0] += n
            slot[1] += value
        ordered = sorted(totals.items(), key=lambda item: (*item[0][:3], item[0][3] or ""))
        return [(*key, n, value) for key, (n, value) in ordered]

    def table(self) -> pa.Table:
        """The lines as an Arrow table (day as a date, currency null when there is none)."""
        import pyarrow as pa

        columns = list(zip(*self.lines, strict=True)) if self.lines else [()] * 7
        return pa.table(
            {
                "experiment": pa.array(columns[0], pa.string()),
                "variation": pa.array(columns[1], pa.string()),
                "day": pa.array([_EPOCH + timedelta(days=d) for d in columns[2]], pa.date32()),
                "event": pa.array(columns[3], pa.string()),
                "currency": pa.array(columns[4], pa.string()),
                "events": pa.array(columns[5], pa.int64()),
                "value": pa.array(columns[6], pa.int64()),
            }
        )


def read(db: sqlite3.Connection, run_id: int) -> Receipt:
    """A run's receipt as the ledger holds it (folded totals plus the log not folded yet),
    read in one snapshot: a fold committed meanwhile by a running send moves totals from
    the log to receipt_days, and must not be seen half."""
    if db.in_transaction:
        return _read(db, run_id)
    db.execute("BEGIN")
    try:
        return _read(db, run_id)
    finally:
        db.execute("COMMIT")


def _read(db: sqlite3.Connection, run_id: int) -> Receipt:
    found = db.execute(
        "SELECT sent, unreceipted, unknown_skipped FROM runs WHERE id = ?", (run_id,)
    ).fetchone()
    sent, unreceipted, skipped = found if found is not None else (0, 0, 0)
    days = db.execute(
        "SELECT grp, day, events, value FROM receipt_days WHERE run_id = ?", (run_id,)
    ).fetchall()
    totals = Deltas()
    totals.add(np.array(days, np.int64).reshape(-1, 4))
    totals.add(_logged(db, run_id))
    lines = Tally(_groups(db, run_id)).lines(totals.total())
    return Receipt.of(
        run_id, lines, sent=int(sent), unreceipted=int(unreceipted), unknown_skipped=int(skipped)
    )


def _groups(db: sqlite3.Connection, run_id: int) -> list[Group]:
    """A run's groups, by number (pairs sorted, as :func:`importer.work.pairs_of` makes them)."""
    by_code: dict[int, tuple[list[tuple[str, str]], str, str | None]] = {}
    for code, experiment, variation, event, currency in db.execute(
        "SELECT grp, experiment, variation, event, currency FROM receipt_groups "
        "WHERE run_id = ? ORDER BY grp, experiment",
        (run_id,),
    ):
        by_code.setdefault(code, ([], event, currency or None))[0].append((experiment, variation))
    size = max(by_code, default=-1) + 1
    none: tuple[list[tuple[str, str]], str, str | None] = ([], "", None)  # a group of no pair
    return [
        (tuple(sorted(pairs)), event, currency)
        for pairs, event, currency in (by_code.get(code, none) for code in range(size))
    ]


def _logged(db: sqlite3.Connection, run_id: int) -> Any:
    """What a run's log holds, summed per (group, day)."""
    totals = Deltas()
    for (blob,) in db.execute("SELECT lines FROM receipt_log WHERE run_id = ?", (run_id,)):
        totals.add(np.frombuffer(blob, dtype="<i8").reshape(-1, 4).astype(np.int64))
    return totals.total()


def iso_day(day: int) -> str:
    """A UTC day number (days since 1970-01-01) as YYYY-MM-DD."""
    return (_EPOCH + timedelta(days=day)).isoformat()


def _order(line: tuple[Any, ...]) -> tuple[Any, ...]:
    experiment, variation, day, event, currency = line[:5]
    return (experiment, variation, day, event, currency or "")
