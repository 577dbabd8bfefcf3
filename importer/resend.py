"""Re-sending the rows that failed permanently: ``retry``.

It takes the ledger's lock, reads each run's failed rows, and sends their recorded URLs again
through the same delivery as ``send`` (:func:`importer.run.deliver`); a
:class:`~importer.ledger.RetryLedger` settles them: a row acknowledged now leaves the
failures and counts as sent.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from yarl import URL

from importer.ledger import FailedRow, FileLock, RetryLedger, failed_rows
from importer.report import Report
from importer.run import Feed, RunSettings, deliver
from importer.schema import DEFAULT_OLD_AFTER_DAYS
from importer.sender import Sender
from importer.work import Work


async def retry_async(path: str | Path, settings: RunSettings, *, run: int | None = None) -> Report:
    """Send the failed rows of one run (or of every run) again; the report counts them."""
    ledger_path = Path(path)
    by_run = failed_rows(ledger_path, run=run)  # also: a missing ledger is refused here
    lock = FileLock(ledger_path)
    try:
        report = Report("retry", source=f"failures in {ledger_path}")
        # The schema is not at hand: very old is the default's, as the send likely counted.
        report.stats.watch(now=time.time(), old_after=DEFAULT_OLD_AFTER_DAYS)
        for run_id, rows in by_run.items():
            works = works_of(rows)
            report.rows_read += len(rows)
            tracker = RetryLedger(ledger_path, run_id)
            try:
                await deliver(_feed(works), tracker, report, settings, total=len(rows))
            finally:
                tracker.close()
            if report.stopped:
                break
    finally:
        lock.release()
    if not report.rows_read:
        report.notes.append("no failed rows to retry")
    return report


def works_of(rows: list[FailedRow]) -> list[Work]:
    """The sender's Work for recorded failed rows: one per file, in input order."""
    by_file: dict[str, Work] = {}
    for failed in rows:
        work = by_file.setdefault(failed.file, Work([], [], [], [], [], failed.file, [], [], []))
        assert work.currencies is not None
        name, value, when = _event_of(failed.url)
        work.positions.append(failed.position)
        assert isinstance(work.urls, list)
        work.urls.append(URL(failed.url, encoded=True))
        work.names.append(name)
        work.values.append(value)
        work.times.append(when)
        work.rows.append(failed.row)
        work.lines.append(failed.line)
        work.currencies.append(failed.currency)
    return list(by_file.values())


def _event_of(url: str) -> tuple[str, int | None, int]:
    """The event name, value and time of a recorded request, for the report's totals."""
    params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    value = params.get("v")
    return params.get("n", ""), int(value) if value else None, int(params.get("time", "0"))


def _feed(works: list[Work]) -> Feed:
    async def feed(sender: Sender, ledger_thread: ThreadPoolExecutor) -> None:
        for work in works:
            await sender.put(work)
        await sender.feed_done()

    return feed
