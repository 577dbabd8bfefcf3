"""What the ledger remembers, and the re-sending of failures.

``status`` and ``failures`` only read the ledger (safe while a run is going); ``retry``
takes the ledger's lock and sends the failed rows' recorded URLs again through the same
sender as ``send``: a row that succeeds leaves the failures table and counts as sent.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pyarrow as pa
from yarl import URL

from importer.errors import LedgerError, UsageError
from importer.intervals import IntervalSet
from importer.ledger import FileLock, Transaction, connect, in_use, ledger_error
from importer.report import Report, spreadsheet_safe
from importer.run import Feed, RunSettings, deliver
from importer.sender import Failure, Sender, Work

if TYPE_CHECKING:
    import pandas as pd

FAILURE_COLUMNS = ["run", "file", "row", "line", "url", "attempts", "status", "error", "time"]


def _open_existing(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise LedgerError(f"{path}: no ledger here; `send` creates it, or pass --ledger")
    return connect(path)


def status(path: str | Path) -> pd.DataFrame:
    """One row per run: its source, counts by state, last activity, unknown rows."""
    try:
        return _status(path)
    except sqlite3.Error as exc:
        raise ledger_error(Path(path), exc) from exc


def _status(path: str | Path) -> pd.DataFrame:
    db = _open_existing(path)
    try:
        runs = db.execute(
            "SELECT id, source_name, endpoint, created, updated, finished, watermark, rows_seen, "
            "sent, filtered, rejected, duplicates, unknown_skipped FROM runs ORDER BY id"
        ).fetchall()
        out = []
        for (
            run,
            name,
            endpoint,
            created,
            updated,
            finished,
            watermark,
            seen,
            sent,
            filtered,
            rejected,
            duplicates,
            skipped_unknown,
        ) in runs:
            settled, leased = IntervalSet([(0, watermark)]), IntervalSet()
            for kind, start, stop in db.execute(
                "SELECT kind, start, stop FROM ranges WHERE run_id = ?", (run,)
            ):
                (settled if kind == "settled" else leased).add_ranges([(start, stop)])
            (failed,) = db.execute(
                "SELECT count(*) FROM failures WHERE run_id = ?", (run,)
            ).fetchone()
            out.append(
                {
                    "run": run,
                    "source": name,
                    "endpoint": endpoint,
                    "state": "finished" if finished else "stopped",
                    "rows_seen": seen,
                    "settled": len(settled),
                    "sent": sent,
                    "filtered": filtered,
                    "rejected": rejected,
                    "failed": failed,
                    "duplicates": duplicates,
                    "unknown": len(leased.difference(settled)),
                    "unknown_skipped": skipped_unknown,
                    "created": _iso(created),
                    "last_activity": _iso(updated),
                }
            )
    finally:
        db.close()
    import pandas as pd

    frame = pd.DataFrame(
        out,
        columns=[
            "run",
            "source",
            "endpoint",
            "state",
            "rows_seen",
            "settled",
            "sent",
            "filtered",
            "rejected",
            "failed",
            "duplicates",
            "unknown",
            "unknown_skipped",
            "created",
            "last_activity",
        ],
    )
    if in_use(Path(path)) and len(frame):
        frame.loc[frame.index[-1], "state"] = "running"
    return frame


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def failures(path: str | Path, *, run: int | None = None) -> pd.DataFrame:
    """The rows that failed permanently, with their last status and error."""
    db = _open_existing(path)
    try:
        where, args = ("WHERE run_id = ?", (run,)) if run is not None else ("", ())
        rows = db.execute(
            f"SELECT run_id, file, row, line, url, attempts, status, error, time FROM failures "
            f"{where} ORDER BY run_id, position",
            args,
        ).fetchall()
    finally:
        db.close()
    import pandas as pd

    frame = pd.DataFrame(rows, columns=FAILURE_COLUMNS)
    frame["time"] = frame["time"].map(_iso)
    return frame


def export_failures(path: str | Path, out: str | Path, *, run: int | None = None) -> int:
    """Write the failures to .csv (spreadsheet-safe) or .parquet; returns how many."""
    target = Path(out)
    if target.suffix.lower() not in (".csv", ".parquet"):
        raise UsageError(f"{target}: the export must end in .csv or .parquet")
    frame = failures(path, run=run)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix.lower() == ".csv":
            import pyarrow.csv as pcsv

            pcsv.write_csv(spreadsheet_safe(table), target)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, target)
    except OSError as exc:
        raise UsageError(f"{target}: cannot write: {exc.strerror}") from exc
    return len(frame)


class RetryLedger:
    """The ledger calls of a retry: success removes the failure, failure updates it."""

    def __init__(self, path: Path, run: int) -> None:
        self.path = path
        self.run = run
        self.db = connect(path)
        self._lock = threading.Lock()
        self._done: list[int] = []
        self._failed: list[Failure] = []

    def settled_range(self, start: int, stop: int) -> bool:
        return False

    def settled_mask(self, positions: Any) -> Any:
        raise NotImplementedError

    def reject(self, mapped: Any) -> None:
        return None

    def lease(self, file: str, events: Any, keys: Any) -> Any:
        raise NotImplementedError

    def done_many(self, positions: list[int]) -> None:
        with self._lock:
            self._done += positions

    def failed(self, failure: Failure) -> None:
        with self._lock:
            self._failed.append(failure)

    def unsent(self, positions: list[int], ambiguous: list[int]) -> None:
        return None  # they stay in the failures table

    def flush(self) -> None:
        with self._lock:
            done, self._done = self._done, []
            failed, self._failed = self._failed, []
        if not (done or failed):
            return
        with Transaction(self.db, self.path):
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

    def close(self) -> None:
        self.flush()
        self.db.close()


def failure_origins(path: str | Path, *, run: int | None = None) -> tuple[int, list[str]]:
    """How many failed rows a retry would send, and their distinct scheme://host:port."""
    db = _open_existing(path)
    try:
        where, args = ("WHERE run_id = ?", (run,)) if run is not None else ("", ())
        origins: dict[str, None] = {}
        count = 0
        for (url,) in db.execute(f"SELECT url FROM failures {where}", args):
            count += 1
            parts = urlsplit(url)
            origins[f"{parts.scheme}://{parts.netloc}"] = None
    finally:
        db.close()
    return count, list(origins)


def _failure_work(db: Any, run: int) -> list[Work]:
    rows = db.execute(
        "SELECT position, file, row, line, url, currency FROM failures WHERE run_id = ? "
        "ORDER BY position",
        (run,),
    ).fetchall()
    by_file: dict[str, Work] = {}
    for position, file, row, line, url, currency in rows:
        work = by_file.setdefault(file, Work([], [], [], [], [], file, [], [], []))
        assert work.currencies is not None
        work.currencies.append(currency)
        event, value, when = _event_of(url)
        work.positions.append(position)
        work.urls.append(URL(url, encoded=True))
        work.names.append(event)
        work.values.append(value)
        work.times.append(when)
        work.rows.append(row)
        work.lines.append(line)
    return list(by_file.values())


def _event_of(url: str) -> tuple[str, int | None, int]:
    """The event name, value and time of a recorded request, for the report's totals."""
    from urllib.parse import parse_qsl, urlsplit

    params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    value = params.get("v")
    return params.get("n", ""), int(value) if value else None, int(params.get("time", "0"))


async def retry_async(path: str | Path, settings: RunSettings, *, run: int | None = None) -> Report:
    """Send the failed rows of one run (or of every run) again; the report counts them."""
    ledger_path = Path(path)
    db = _open_existing(ledger_path)
    lock = FileLock(ledger_path)
    try:
        runs = (
            [run]
            if run is not None
            else [r for (r,) in db.execute("SELECT DISTINCT run_id FROM failures ORDER BY run_id")]
        )
        report = Report("retry", source=f"failures in {ledger_path}")
        for run_id in runs:
            works = _failure_work(db, run_id)
            report.rows_read += sum(len(w) for w in works)
            tracker = RetryLedger(ledger_path, run_id)
            try:
                await deliver(
                    _works_feed(works), tracker, report, settings, total=sum(len(w) for w in works)
                )
            finally:
                tracker.close()
            if report.extra.get("stopped"):
                break
    finally:
        db.close()
        lock.release()
    if not report.rows_read:
        report.notes.append("no failed rows to retry")
    return report


def _works_feed(works: list[Work]) -> Feed:
    async def feed(sender: Sender, ledger_thread: Any) -> None:
        for work in works:
            await sender.put(work)
        await sender.feed_done()

    return feed
