"""The run ledger: which rows of a run are settled or leased, which failed, which keys were sent.

A run is one source (by content) with one schema to one endpoint. Its rows, known here by
their position in the source only, move through named transitions, each one SQLite
transaction (WAL):

* **reject** (per batch): rejected and filtered rows become settled;
* **lease** (per chunk of ~1,000 rows, as it is queued): duplicate rows become settled, the
  rest are leased — written before any of them is dispatched;
* **flush** (every ~200 ms or few hundred rows): acknowledged and failed rows become settled,
  their leases go; failures are recorded; acknowledged rows are added to the run's receipt
  (:mod:`importer.ledger.receipt`) in the same transaction;
* **release** (at a graceful stop): leases of rows that certainly never arrived go, so
  only rows that may have arrived stay leased.

After a crash, leased-but-unsettled rows are *unknown*: ``unknown="resend"`` sends them
again (never loses), ``unknown="skip"`` settles them (never duplicates). Settled rows are
a watermark plus ranges (:mod:`importer.ledger.intervals`), not one row per event; resuming
is a query, not a replay. :class:`MemoryLedger` is the no-file stand-in (``--no-ledger``);
:class:`RetryLedger` settles the failed rows of a run that ``retry`` sends again.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from importer.errors import RunMismatchError
from importer.ledger import receipt as receipts
from importer.ledger.intervals import IntervalSet
from importer.ledger.receipt import Deltas, Receipt, RunReceipt, Tally
from importer.ledger.store import FileLock, Transaction, connect, load_ranges, translated
from importer.work import Failure, ReceiptRows

DEFAULT_FLUSH_ROWS = 2000
DEFAULT_FLUSH_SECONDS = 0.2
SANDBOX = "sandbox"
Unknown = Literal["resend", "skip"]


@dataclass
class Leased:
    """What a lease did with a chunk of rows.

    Attributes:
        positions: the rows leased, to be sent now.
        keep: per row of the chunk, whether it was leased (None: every row was).
        duplicates: rows settled as duplicates of a dedupe key sent before.
    """

    positions: list[int]
    keep: np.ndarray | None
    duplicates: int


@dataclass(frozen=True)
class RunKey:
    """What identifies a run: the source by content, the schema, the endpoint."""

    source_key: str
    source_name: str
    source_fingerprint: str
    schema_fingerprint: str
    endpoint: str


@dataclass(frozen=True)
class LedgerRun:
    """Where a run is recorded: the ledger file and the run's id in it."""

    path: str
    run: int


@dataclass(frozen=True)
class Resume:
    """What an earlier run of the same command left.

    Attributes:
        left: rows the earlier run read but neither settled nor left unknown (pending after
            an outage or a stop): this run sends them.
        failed, rejected, filtered: rows the run holds as failed permanently (``retry``
            re-sends them), rejected and filtered.
    """

    run_id: int
    resumed: bool
    already_sent: int
    already_settled: int
    unknown: int
    policy: Unknown
    left: int = 0
    failed: int = 0
    rejected: int = 0
    filtered: int = 0


class MemoryLedger:
    """A ledger for one process: nothing survives it, but duplicate keys are still caught."""

    resume: Resume | None = None  # nothing is remembered from before
    recorded_in: LedgerRun | None = None  # nor after

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self.unknown_now = 0
        self._tally = Tally()
        self._deltas = Deltas()
        self._sent = 0
        self._lock = threading.Lock()
        self._done: list[int] = []
        self._failed: list[int] = []

    def settled_range(self, start: int, stop: int) -> bool:
        """Nothing is settled before a run with no ledger."""
        return False

    def settled_mask(self, positions: np.ndarray) -> np.ndarray:
        """Nothing is settled before a run with no ledger."""
        return np.zeros(len(positions), dtype=bool)

    def reject(self, rejected: list[int], filtered: list[int], seen: int) -> None:
        """Nothing to record."""

    def lease(self, positions: list[int], keys: list[str] | None) -> Leased:
        """Skip rows whose dedupe key came earlier in this run."""
        if keys is None:
            return Leased(positions, None, 0)
        keep = np.zeros(len(keys), dtype=bool)
        for i, key in enumerate(keys):
            if key not in self._keys:
                self._keys.add(key)
                keep[i] = True
        leased = [p for p, kept in zip(positions, keep.tolist(), strict=True) if kept]
        return Leased(leased, keep, len(positions) - len(leased))

    def expect(self, rows: ReceiptRows | None) -> None:
        """Rows about to be sent: their receipt groups, for when they are acknowledged."""
        self._tally.expect(rows)

    def done_many(self, positions: list[int]) -> None:
        """Rows were acknowledged (added to the receipt at the next flush)."""
        with self._lock:
            self._done += positions

    def failed(self, failure: Failure) -> None:
        """A row failed: it will not be in the receipt."""
        with self._lock:
            self._failed.append(failure.position)

    def unsent(self, positions: list[int], ambiguous: list[int]) -> None:
        """Count the rows that may have arrived."""
        self.unknown_now += len(ambiguous)

    def due(self) -> bool:
        """Nothing is ever waiting long: the receipt is summed every flush."""
        return False

    def flush(self) -> None:
        """Add the rows acknowledged since the last flush to the receipt (in memory)."""
        with self._lock:
            done, self._done = self._done, []
            failed, self._failed = self._failed, []
        delta, _counted = self._tally.take(done)
        self._tally.forget(failed)
        self._sent += len(done)
        self._deltas.add(delta)

    @property
    def receipt(self) -> Receipt:
        """What this process delivered (nothing is kept after it)."""
        return Receipt.of(None, self._tally.lines(self._deltas.total()), sent=self._sent)

    def close(self, *, finished: bool = False) -> None:
        """Sum what is left: nothing to close."""
        self.flush()


class _Waiting:
    """The rows the sender settled since the last commit, handed over from the event loop's
    thread to the ledger's: acknowledged positions and permanent failures."""

    def __init__(self, flush_rows: int) -> None:
        self.flush_rows = flush_rows
        self._lock = threading.Lock()
        self._done: list[int] = []
        self._failed: list[Failure] = []

    def done_many(self, positions: list[int]) -> None:
        """Rows were acknowledged (committed at the next flush)."""
        with self._lock:
            self._done += positions

    def failed(self, failure: Failure) -> None:
        """A row failed permanently (committed at the next flush)."""
        with self._lock:
            self._failed.append(failure)

    def due(self) -> bool:
        """Whether enough rows wait for a commit to do one now."""
        with self._lock:
            return len(self._done) + len(self._failed) >= self.flush_rows

    def _take(self) -> tuple[list[int], list[Failure]]:
        """What waits, emptied (call with ``self._lock`` held)."""
        done, self._done = self._done, []
        failed, self._failed = self._failed, []
        return done, failed


class SqliteLedger(_Waiting):
    """The crash-safe ledger of one run (see the module docstring).

    Args:
        path: the SQLite file.
        key: identifies the run.
        new_run: start a fresh run even if one for this source exists.
        unknown: what to do with rows an earlier run leased but never settled.
        flush_rows: commit once this many rows are waiting (or every flush_seconds).
        dedupe: whether the schema has a dedupe key.
    """

    def __init__(
        self,
        path: str | Path,
        key: RunKey,
        *,
        new_run: bool = False,
        unknown: Unknown = "resend",
        flush_rows: int = DEFAULT_FLUSH_ROWS,
        dedupe: bool = False,
        replay_rejects: bool = False,
    ) -> None:
        self.path = Path(path).absolute()  # messages and hints work from any directory
        self.key = key
        super().__init__(flush_rows)
        self.dedupe = dedupe
        self._released: list[int] = []
        self._ambiguous: list[int] = []
        self._leased_keys: dict[int, str] = {}  # dedupe keys of rows leased by this process
        self._rows_seen = 0
        self.receipt: Receipt | None = None  # the run's, read when the ledger closes
        self._file_lock = FileLock(self.path)
        try:
            self.db = connect(self.path)
            self.run_id, _ = self._open_run(new_run, unknown)
        except BaseException:
            self._file_lock.release()
            raise
        self._snapshot = self.settled.copy()
        if replay_rejects:  # re-read rows rejected before, so a rejects file lists them again
            self._snapshot = self._snapshot.difference(self._rejected_before())

    def _rejected_before(self) -> IntervalSet:
        with translated(self.path):
            rows = self.db.execute(
                "SELECT start, stop FROM rejected_ranges WHERE run_id = ?", (self.run_id,)
            ).fetchall()
        return IntervalSet(rows)

    def _open_run(self, new_run: bool, unknown: Unknown) -> tuple[int, bool]:
        """Find or start the run, load its ranges, apply the unknown policy."""
        with translated(self.path):
            self.run_id, resumed = self._find_run(new_run)
            self.settled, self.leased = load_ranges(self.db, self.run_id)
            self.unknown = IntervalSet()  # leased by a process that died: may have arrived
            self.resume = self._apply_unknown(resumed, unknown)
        with self._transaction():  # folds what a process of this run that died logged
            self._receipt = RunReceipt(self.db, self.run_id)
        return self.run_id, resumed

    # -- opening ----------------------------------------------------------------------------

    def _find_run(self, new_run: bool) -> tuple[int, bool]:
        """The run to resume: the same content to the same endpoint, wherever the file is.

        Failing that, a run of the same path whose content changed is refused (not mixed).
        """
        key = self.key
        columns = "id, source_fingerprint, schema_fingerprint, source_name, sent, updated"
        row = self.db.execute(
            f"SELECT {columns} FROM runs WHERE source_fingerprint = ? AND endpoint = ? "
            "ORDER BY id DESC LIMIT 1",
            (key.source_fingerprint, key.endpoint),
        ).fetchone()
        if row is None:
            row = self.db.execute(
                f"SELECT {columns} FROM runs WHERE source_key = ? AND endpoint = ? "
                "ORDER BY id DESC LIMIT 1",
                (key.source_key, key.endpoint),
            ).fetchone()
        if row is not None and not new_run:
            run_id, source_fp, schema_fp, name, sent, updated = row
            if source_fp == key.source_fingerprint and schema_fp == key.schema_fingerprint:
                return int(run_id), True
            what = "the file's contents" if source_fp != key.source_fingerprint else "the schema"
            raise RunMismatchError(
                f"{self.path} holds run {run_id} for {name} to {key.endpoint} ({sent:,} rows sent, "
                f"last active {_when(updated)}), but {what} changed since. To resume that run, "
                "restore the original; to import this as a new run, pass --new-run (rows whose "
                "dedupe key an earlier run sent are still skipped)."
            )
        now = time.time()
        cursor = self.db.execute(
            "INSERT INTO runs (source_key, source_name, source_fingerprint, schema_fingerprint, "
            "endpoint, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                key.source_key,
                key.source_name,
                key.source_fingerprint,
                key.schema_fingerprint,
                key.endpoint,
                now,
                now,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid, False

    def _apply_unknown(self, resumed: bool, policy: Unknown) -> Resume:
        sent, seen, rejected, filtered = self.db.execute(
            "SELECT sent, rows_seen, rejected, filtered FROM runs WHERE id = ?", (self.run_id,)
        ).fetchone()
        (failed,) = self.db.execute(
            "SELECT count(*) FROM failures WHERE run_id = ?", (self.run_id,)
        ).fetchone()
        unknown = self.leased.copy()
        count = len(unknown)
        left = max(0, int(seen) - len(self.settled) - count)
        if count:
            with self._transaction():
                if policy == "skip":
                    self.settled.add_ranges(unknown.ranges)
                    self.db.execute(
                        "UPDATE runs SET unknown_skipped = unknown_skipped + ? WHERE id = ?",
                        (count, self.run_id),
                    )
                else:
                    # They stay unknown until a row is acknowledged or a policy settles it:
                    # if this process dies too, the next run still knows they may have arrived.
                    self.unknown = unknown
                    self.db.execute(
                        "UPDATE runs SET unknown_resent = unknown_resent + ? WHERE id = ?",
                        (count, self.run_id),
                    )
                self.leased = IntervalSet()
                self._write_ranges()
        return Resume(
            self.run_id,
            resumed,
            int(sent),
            len(self.settled),
            count,
            policy,
            left=left,
            failed=int(failed),
            rejected=int(rejected),
            filtered=int(filtered),
        )

    # -- before mapping --------------------------------------------------------------------

    def settled_range(self, start: int, stop: int) -> bool:
        """Whether an earlier run settled every row of [start, stop)."""
        return self._snapshot.covers(start, stop)

    def settled_mask(self, positions: np.ndarray) -> np.ndarray:
        """True for each row an earlier run settled."""
        return self._snapshot.contains(positions)

    # -- transitions -------------------------------------------------------------------------

    def reject(self, rejected: list[int], filtered: list[int], seen: int) -> None:
        """Settle rejected and filtered rows (one transaction, if any); ``seen``: the end of
        what was read so far (written with the next commit)."""
        self._rows_seen = max(self._rows_seen, seen)
        if not rejected and not filtered:
            return
        if rejected:  # rows re-read to list them again (replay_rejects) are not counted twice
            again = self.settled.contains(np.array(rejected, dtype=np.int64))
            rejected = [p for p, seen in zip(rejected, again.tolist(), strict=True) if not seen]
        with self._transaction():
            self.settled.add(rejected + filtered)
            self.db.execute(
                "UPDATE runs SET rejected = rejected + ?, filtered = filtered + ? WHERE id = ?",
                (len(rejected), len(filtered), self.run_id),
            )
            if rejected:
                ranges = IntervalSet()
                ranges.add(rejected)
                self.db.executemany(
                    "INSERT OR REPLACE INTO rejected_ranges VALUES (?, ?, ?)",
                    [(self.run_id, a, b) for a, b in ranges.ranges],
                )
            self._write_ranges()

    def lease(self, positions: list[int], keys: list[str] | None) -> Leased:
        """Claim dedupe keys and lease rows just before they are queued (one transaction).

        Duplicates become settled; the rest are leased, committed before any is dispatched.
        Leasing a small chunk at a time keeps the rows that can turn "unknown" in a crash
        to about what is queued and in flight.
        """
        with self._transaction():
            keep = None
            duplicates, leased = [], positions
            if self.dedupe and keys is not None:
                keep = self._claim(keys, positions)
                leased = []
                for position, key, kept in zip(positions, keys, keep.tolist(), strict=True):
                    if kept:
                        leased.append(position)
                        self._leased_keys[position] = key
                    else:
                        duplicates.append(position)
            if duplicates:
                self.settled.add(duplicates)
                self.db.execute(
                    "UPDATE runs SET duplicates = duplicates + ? WHERE id = ?",
                    (len(duplicates), self.run_id),
                )
                self._write_ranges()
            self._add_lease(leased)
        return Leased(leased, keep, len(duplicates))

    def expect(self, rows: ReceiptRows | None) -> None:
        """Rows just leased, about to be sent: their receipt groups, kept in memory until
        they settle (a flush adds the acknowledged ones to the run's receipt)."""
        self._receipt.tally.expect(rows)

    def unsent(self, positions: list[int], ambiguous: list[int]) -> None:
        """At a stop: release the leases of rows that certainly never arrived."""
        maybe = set(ambiguous)
        with self._lock:
            self._released += [p for p in positions if p not in maybe]
            self._ambiguous += ambiguous

    def flush(self) -> None:
        """Commit acknowledged, failed and released rows in one transaction."""
        with self._lock:
            done, failed = self._take()
            released, self._released = self._released, []
        if not (done or failed or released):
            return
        settled_now = done + [f.position for f in failed]
        delta, counted = self._receipt.tally.take(done)
        if failed or released:
            self._receipt.tally.forget([f.position for f in failed] + released)
        # Few statements: each is a hand-off of the GIL that interrupts the event loop.
        with self._transaction():
            self.settled.add(settled_now)
            self.leased.remove(settled_now + released)
            if len(self.unknown):  # released rows stay unknown: an earlier process sent them
                self.unknown.remove(settled_now)
            if failed:
                self.db.executemany(
                    "INSERT OR REPLACE INTO failures (run_id, position, file, row, line, url, "
                    "attempts, status, error, time, currency) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            self.run_id,
                            f.position,
                            f.file,
                            f.row,
                            f.line,
                            f.url,
                            f.attempts,
                            f.status,
                            f.error,
                            time.time(),
                            f.currency,
                        )
                        for f in failed
                    ],
                )
            if len(self.unknown) and released:  # a key of a row that may have arrived stays
                maybe = self.unknown.contains(np.array(released, dtype=np.int64))
                released = [p for p, m in zip(released, maybe.tolist(), strict=True) if not m]
            self._drop_keys(released)
            if self._leased_keys:  # only with a dedupe key: settled rows keep their claim
                for position in settled_now:
                    self._leased_keys.pop(position, None)
            self._receipt.write(delta)  # the receipt, with the rows it counts
            self._write_ranges(sent=len(done), failed=len(failed), unreceipted=len(done) - counted)
        self._receipt.committed()

    def close(self, *, finished: bool = False) -> None:
        """Commit what is left, mark the run finished if it is, let go of the file."""
        try:
            self.flush()
            with self._transaction():
                self._write_ranges()  # also the rows seen since the last commit
                self._receipt.write(receipts.NO_DELTA, fold=True)
                if finished:
                    self.db.execute(
                        "UPDATE runs SET finished = ? WHERE id = ?", (time.time(), self.run_id)
                    )
            self._receipt.committed()
            with translated(self.path):
                self.receipt = receipts.read(self.db, self.run_id)
            self.db.close()
        finally:
            self._file_lock.release()

    def record_datafile(self, revision: str) -> None:
        """Keep the revision of the datafile this run was checked against (``status``)."""
        with self._transaction():
            self.db.execute(
                "UPDATE runs SET datafile_revision = ? WHERE id = ?", (revision, self.run_id)
            )

    @property
    def recorded_in(self) -> LedgerRun:
        """The file and run id, for messages and ``retry --ledger --run``."""
        return LedgerRun(str(self.path), self.run_id)

    @property
    def unknown_now(self) -> int:
        """Rows that may have arrived: still leased (after a stop), or unknown from before."""
        maybe = self.leased.copy()
        maybe.add_ranges(self.unknown.ranges)
        return len(maybe.difference(self.settled))

    # -- helpers -----------------------------------------------------------------------------

    def _transaction(self) -> Transaction:
        return Transaction(self.db, self.path)

    def _write_ranges(self, *, sent: int = 0, failed: int = 0, unreceipted: int = 0) -> None:
        """Rewrite this run's ranges (a handful of rows) and its watermark and counts."""
        watermark = self.settled.watermark()
        rows = [(self.run_id, "settled", a, b) for a, b in self.settled.ranges if a >= watermark]
        rows += [(self.run_id, "leased", a, b) for a, b in self.leased.ranges]
        rows += [(self.run_id, "unknown", a, b) for a, b in self.unknown.ranges]
        self.db.execute("DELETE FROM ranges WHERE run_id = ?", (self.run_id,))
        self.db.executemany("INSERT INTO ranges VALUES (?, ?, ?, ?)", rows)
        self.db.execute(
            "UPDATE runs SET watermark = ?, sent = sent + ?, failed = failed + ?, updated = ?, "
            "rows_seen = max(rows_seen, ?), unreceipted = unreceipted + ? WHERE id = ?",
            (watermark, sent, failed, time.time(), self._rows_seen, unreceipted, self.run_id),
        )

    def _add_lease(self, positions: list[int]) -> None:
        """Record new leases by appending their ranges (the next flush rewrites them all)."""
        fresh = IntervalSet()
        fresh.add(positions)
        self.leased.add_ranges(fresh.ranges)
        self.db.executemany(
            "INSERT OR REPLACE INTO ranges VALUES (?, 'leased', ?, ?)",
            [(self.run_id, a, b) for a, b in fresh.ranges],
        )

    def _claim(self, keys: list[str], positions: list[int]) -> np.ndarray:
        """Claim each row's dedupe key; False where another row already owns it.

        A key owned by another row of this run, or by a row of another run to the same
        destination (sent, failed and awaiting ``retry``, or possibly arrived before a crash),
        is a duplicate. Keys of rows a graceful stop released are owned by no one. Keys are
        stored as written: ids that grow (order numbers) append to the index cheaply. The
        keys travel as one JSON array, so SQLite does the per-row work, not Python.
        """
        destination = self.key.endpoint
        pairs = json.dumps(list(zip(keys, positions, strict=True)))
        inserted = self.db.execute(
            "INSERT OR IGNORE INTO dedupe_keys SELECT ?, value ->> 0, ?, value ->> 1 "
            "FROM json_each(?)",
            (destination, self.run_id, pairs),
        ).rowcount
        if inserted == len(keys):
            return np.ones(len(keys), dtype=bool)  # all new: the usual case
        owners = {
            key: (run_id, position)
            for key, run_id, position in self.db.execute(
                # CROSS JOIN keeps the chunk's keys as the outer loop: one index lookup per
                # key, not a scan of every stored key of the destination per chunk.
                "SELECT d.key, d.run_id, d.position FROM json_each(?) AS k "
                "CROSS JOIN dedupe_keys AS d ON d.destination = ? AND d.key = k.value ->> 0",
                (pairs, destination),
            )
        }
        return np.array(
            [
                owners.get(key) == (self.run_id, position)
                for key, position in zip(keys, positions, strict=True)
            ],
            dtype=bool,
        )

    def _drop_keys(self, positions: list[int]) -> None:
        """Free the keys of rows that certainly never left (a graceful stop released them)."""
        keys = [self._leased_keys.pop(p) for p in positions if p in self._leased_keys]
        if keys:
            self.db.executemany(
                "DELETE FROM dedupe_keys WHERE destination = ? AND key = ?",
                [(self.key.endpoint, key) for key in keys],
            )


class RetryLedger(_Waiting):
    """The ledger of a ``retry`` of one run's failed rows: a row acknowledged now leaves the
    failures, counts as sent and is added to the run's receipt (from its recorded request);
    one that fails again has its failure updated.

    It takes the same calls from the sender as :class:`SqliteLedger` (rows are known by
    position); the caller holds the file's lock.
    """

    def __init__(self, path: Path, run: int, *, flush_rows: int = DEFAULT_FLUSH_ROWS) -> None:
        super().__init__(flush_rows)
        self.path = path
        self.run = run
        self.db = connect(path)
        self.unknown_now = 0  # rows whose request may have arrived: they stay failed
        with Transaction(self.db, path):
            self._receipt = RunReceipt(self.db, run)

    def unsent(self, positions: list[int], ambiguous: list[int]) -> None:
        """At a stop: the rows stay in the failures table for the next retry."""
        with self._lock:
            self.unknown_now += len(ambiguous)

    def flush(self) -> None:
        """Commit acknowledged and failed rows in one transaction."""
        with self._lock:
            done, failed = self._take()
        if not (done or failed):
            return
        with Transaction(self.db, self.path):
            if done:
                recorded = self.db.execute(
                    "SELECT url, currency FROM failures WHERE run_id = ? AND position IN "
                    "(SELECT value FROM json_each(?))",
                    (self.run, json.dumps(done)),
                ).fetchall()
                self._receipt.write(receipts.of_urls(self._receipt.tally, recorded), fold=True)
            self.db.executemany(
                "DELETE FROM failures WHERE run_id = ? AND position = ?",
                [(self.run, p) for p in done],
            )
            self.db.executemany(
                "UPDATE failures SET attempts = attempts + ?, status = ?, error = ?, time = ? "
                "WHERE run_id = ? AND position = ?",
                [
                    (f.attempts, f.status, f.error, time.time(), self.run, f.position)
                    for f in failed
                ],
            )
            self.db.execute(
                "UPDATE runs SET sent = sent + ?, failed = failed - ?, updated = ? WHERE id = ?",
                (len(done), len(done), time.time(), self.run),
            )
        self._receipt.committed()

    def close(self) -> None:
        """Commit what is left and close the file."""
        try:
            self.flush()
        finally:
            self.db.close()


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch))
