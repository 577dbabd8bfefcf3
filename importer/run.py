"""A send run: the producer (read → map → ledger admit) feeding the sender, and its report.

Reading and mapping run in threads; the event loop only moves Work and requests. The run
stops when every row is settled, when asked to (Ctrl-C, SIGTERM, a notebook interrupt),
or when the endpoint is down; then in-flight requests drain, the ledger commits, and the
report says what is pending and how to resume.
"""

from __future__ import annotations

import asyncio
import gc
import math
import threading
from collections.abc import Awaitable, Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from importer.errors import ImporterError
from importer.ledger import DEFAULT_FLUSH_SECONDS, Leased
from importer.mapping import Mapped, Mapper
from importer.options import SendOptions
from importer.outputs import RejectedRowsWriter, RejectsWriter
from importer.pipeline import mapped_batches
from importer.progress import NullProgress, Progress
from importer.report import Report
from importer.sender import Outcome, Sender
from importer.source import Source
from importer.transport import AnyTransport
from importer.work import Failure, ReceiptRows, Work, receipt_rows, work_of

DEFAULT_LEASE_ROWS = 1024
DEFAULT_SEND_BATCH_SIZE = 16_384  # small batches: a send run's memory is what it holds at once
_TICK = 0.02


class Settlement(Protocol):
    """The ledger calls of a delivery: each row's fate, and commits."""

    def done_many(self, positions: list[int]) -> None: ...
    def failed(self, failure: Failure) -> None: ...
    def unsent(self, positions: list[int], ambiguous: list[int]) -> None: ...
    def due(self) -> bool: ...
    def flush(self) -> None: ...
    @property
    def unknown_now(self) -> int: ...


class RunLedger(Settlement, Protocol):
    """The ledger calls of a send run (see :mod:`importer.ledger.runs`): rows by position."""

    def settled_range(self, start: int, stop: int) -> bool: ...
    def settled_mask(self, positions: Any) -> Any: ...
    def reject(self, rejected: list[int], filtered: list[int], seen: int) -> None: ...
    def lease(self, positions: list[int], keys: list[str] | None) -> Leased: ...
    def expect(self, rows: ReceiptRows | None) -> None: ...


class Control:
    """Stops a run from another thread: first a graceful stop, then an abort."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sender: Sender | None = None
        self.requests = 0

    def attach(self, loop: asyncio.AbstractEventLoop, sender: Sender) -> None:
        """Called by the run once it is sending."""
        with self._lock:
            self._loop, self._sender = loop, sender
            if self.requests:
                loop.call_soon_threadsafe(sender.stop, self._reason())

    def request_stop(self) -> None:
        """Ask the run to stop: graceful the first time, at once the second."""
        with self._lock:
            self.requests += 1
            if self._loop is not None and self._sender is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._sender.stop, self._reason())

    def _reason(self) -> str:
        return "interrupted" if self.requests == 1 else "aborted"


@dataclass
class RunSettings:
    """Everything a send run needs besides the source and schema."""

    options: SendOptions = field(default_factory=SendOptions)
    batch_size: int = DEFAULT_SEND_BATCH_SIZE
    sandbox: bool = False
    progress: Progress = field(default_factory=NullProgress)
    control: Control = field(default_factory=Control)
    rejects: RejectsWriter | None = None
    rejected_rows: RejectedRowsWriter | None = None
    columns: list[str] | None = None  # None: only the columns the schema reads
    retry_command: str = "event-backfill retry"  # what re-sends permanent failures
    lease_rows: int = DEFAULT_LEASE_ROWS
    flush_seconds: float = DEFAULT_FLUSH_SECONDS
    # How requests go out (None: aiohttp); called once per delivery. Tests script it.
    transport: Callable[[SendOptions], AnyTransport] | None = None
    # --canary: the positions to send (sorted); every other valid row is held back, pending.
    canary: np.ndarray | None = None

    def __post_init__(self) -> None:
        # A leased row that a kill -9 finds unsent is unknown, and up to ~4 chunks are
        # leased ahead of the sender (the queue holds 2). At --rate N a chunk is at most one
        # second's worth, so a kill leaves seconds of rows unknown, not minutes (a newcomer
        # found 1,870 unknown rows of 2,000 seen at --rate 50 with chunks of 1,024).
        if self.options.rate:
            self.lease_rows = max(1, min(self.lease_rows, math.ceil(self.options.rate)))


Feed = Callable[[Sender, ThreadPoolExecutor], Awaitable[None]]


async def deliver(
    feed: Feed,
    ledger: Settlement,
    report: Report,
    settings: RunSettings,
    *,
    total: int | None = None,
) -> Outcome:
    """Run a sender fed by ``feed``; commit the ledger as rows settle; fill ``report``.

    Args:
        feed: puts Work on the sender's queue (given the sender and the ledger's thread),
            then calls ``feed_done``. An ImporterError it raises stops the run gracefully
            and is raised again once everything is committed.
        ledger: told of every row's fate; flushed every ``settings.flush_seconds``.
        report: filled with the counts.
        settings: how to send.
        total: rows expected, for the progress bar.
    """
    loop = asyncio.get_running_loop()
    transport = settings.transport(settings.options) if settings.transport else None
    sender = Sender(
        settings.options, tracker=ledger, on_done=report.stats.add_many, transport=transport
    )
    settings.control.attach(loop, sender)
    ledger_thread = ThreadPoolExecutor(1, thread_name_prefix="ledger")
    errors: list[BaseException] = []

    async def guarded() -> None:
        try:
            await feed(sender, ledger_thread)
        except ImporterError as exc:
            errors.append(exc)
            sender.stop("error")
        except Exception:
            # A bug in the feed (not the user's input) must end the run, raised once it has
            # drained and committed, not leave the sender waiting for rows forever.
            sender.stop("error")
            raise

    producer = asyncio.create_task(guarded())
    bar = _Bar(sender, report, settings.progress)
    ticker = asyncio.create_task(_tick(sender, ledger, bar, settings, ledger_thread, errors))
    settings.progress.start(total, "rows")
    try:
        with _lighter_gc():
            await sender.run()
            await producer
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
        outcome = sender.settle()
        if settings.canary is not None and outcome.stopped is None and outcome.pending:
            outcome.stopped = "canary"
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
        try:
            await loop.run_in_executor(ledger_thread, ledger.flush)
        except ImporterError as exc:
            errors.append(exc)
        ledger_thread.shutdown(wait=True)
        bar.show()  # the last frame is the report's numbers, not those of the last tick
        settings.progress.close()
    _fill(report, outcome, ledger.unknown_now)
    report.notes += stop_notes(
        outcome, settings.options, sender.last_error, retry=settings.retry_command
    )
    report.notes += [
        f"{what} was lost mid-run: what it held was sent again (within the bound above)."
        for what in getattr(sender.transport, "lost", [])
    ]
    if errors:
        raise errors[0]
    return outcome


@contextmanager
def _lighter_gc() -> Iterator[None]:
    """Collect garbage less often while sending; put everything back afterwards.

    Every request allocates short-lived objects, so generation 0 fills constantly; and a full
    collection would walk every object pandas and pyarrow created at import. Freezing those
    and raising the first threshold is worth ~5% of events/s here.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def source_feed(
    source: Source, mapper: Mapper, ledger: RunLedger, report: Report, settings: RunSettings
) -> Feed:
    """The feed of a send run: read and map in a thread, settle rejects, lease and queue."""

    async def feed(sender: Sender, ledger_thread: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        reader = ThreadPoolExecutor(1, thread_name_prefix="reader")
        # One thread reads and maps: mapping is ~100x faster than sending, so read-ahead
        # would only hold more batches in memory (peak RSS must not grow with the file).
        batches: Generator[Mapped, None, None] = mapped_batches(
            source,
            mapper,
            batch_size=settings.batch_size,
            ledger=ledger,
            workers=1,
            columns=settings.columns,
        )
        try:
            while sender.accepting:
                mapped = await loop.run_in_executor(reader, next, batches, None)
                if mapped is None:
                    break
                await loop.run_in_executor(ledger_thread, _reject, ledger, mapped)
                report.add_mapped(mapped)
                if settings.rejects is not None:
                    settings.rejects.write(mapped.rejects)
                if settings.rejected_rows is not None:
                    settings.rejected_rows.write(mapped)
                report.skipped_done += mapped.batch.skipped
                await _queue(mapped, ledger, sender, report, settings, ledger_thread)
                if settings.canary is not None and _past(mapped, settings.canary):
                    break  # every canary row is queued: the rest is not read
            await sender.feed_done()
        finally:
            reader.submit(batches.close)
            reader.shutdown(wait=False)

    return feed


def stop_notes(
    outcome: Outcome, options: SendOptions, last_error: str, *, retry: str = "event-backfill retry"
) -> list[str]:
    """What a user must know when a run stopped before the end."""
    notes = []
    if outcome.stopped == "gave-up":
        notes.append(
            f"stopped: nothing was delivered for {options.give_up_after:g} s (last error: "
            f"{last_error or 'none'}). No row was failed for it: check the endpoint and the "
            "network, then run the same command again to resume: it sends the rows left pending."
        )
    elif outcome.stopped in ("interrupted", "aborted"):
        notes.append(
            f"stopped on request with {outcome.pending:,} rows pending (rows not read yet "
            "are not counted here): run the same command again to resume."
        )
    elif outcome.stopped == "canary":
        notes.append(
            "canary: these rows were sent, the rest held back. Check this report's receipt "
            "against the results page of each experiment (in a few minutes: events per "
            "variation, and revenue where v is sent); when they show up, run the same command "
            "without --canary to send the rest (it never sends a canary row again)."
        )
    elif outcome.stopped == "error":
        notes.append(f"stopped by an error with {outcome.pending:,} rows pending (see below).")
    if outcome.maybe_twice:
        notes.append(
            f"{outcome.maybe_twice:,} requests were sent again after one that may have arrived "
            f"(timed out or cut off after it was sent): at most {outcome.maybe_twice:,} events "
            "may have arrived twice."
        )
    if outcome.parked:
        notes.append(
            f"{outcome.parked:,} rows were not retried after {options.max_attempts} requests "
            "that may each have arrived (timeouts): they are unknown; the same command resends "
            "them (--unknown skip settles them instead). Check the endpoint's response times "
            "and --timeout."
        )
    if outcome.unknown:
        notes.append(
            f"{outcome.unknown:,} of the pending rows may have arrived (their request "
            "was cut off or timed out): resuming resends them unless --unknown skip."
        )
    if outcome.failed:
        notes.append(
            f"{outcome.failed:,} rows failed permanently: see the failures, fix the "
            f"cause, then run: {retry}"
        )
    return notes


async def _queue(
    mapped: Mapped,
    ledger: RunLedger,
    sender: Sender,
    report: Report,
    settings: RunSettings,
    ledger_thread: ThreadPoolExecutor,
) -> None:
    """Lease the valid rows a chunk at a time, each just before it is queued (with
    ``--canary``, only its rows: the others are held back, pending)."""
    loop = asyncio.get_running_loop()
    events, keys, file = mapped.events, mapped.keys, mapped.batch.file
    lease_rows, canary = settings.lease_rows, settings.canary
    if canary is not None:
        keep = np.isin(events.column("position").to_numpy(), canary)
        sender.hold_back(int((~keep).sum()))
        events = events.filter(pa.array(keep))
        keys = [key for key, kept in zip(keys, keep, strict=True) if kept] if keys else keys
    for start in range(0, events.num_rows, lease_rows):
        chunk = events.slice(start, lease_rows)
        chunk_keys = keys[start : start + lease_rows] if keys is not None else None
        if not sender.accepting:
            sender.orphan(work_of(file, chunk, text_urls=True))  # never leased: pending
            continue
        work, duplicates = await loop.run_in_executor(
            ledger_thread, _admit, ledger, file, chunk, chunk_keys, sender.text_urls
        )
        report.skipped_duplicate += duplicates
        if work is not None:
            await sender.put(work)


def _admit(
    ledger: RunLedger, file: str, chunk: pa.Table, keys: list[str] | None, text_urls: bool
) -> tuple[Work | None, int]:
    """Lease a chunk's rows and build the sender's Work of those leased (in the ledger's
    thread: building URL objects there overlaps the event loop's socket calls); hand the
    ledger their receipt groups before any of them can be acknowledged."""
    leased = ledger.lease(chunk.column("position").to_pylist(), keys)
    work = work_of(file, chunk, leased.keep, leased.positions, text_urls=text_urls)
    if work is not None:
        ledger.expect(receipt_rows(chunk, leased.keep))
    return work, leased.duplicates


def _past(mapped: Mapped, canary: np.ndarray) -> bool:
    """Whether the batch reached the last canary row."""
    positions = mapped.batch.positions
    return not len(canary) or (len(positions) > 0 and int(positions.max()) >= int(canary[-1]))


def _reject(ledger: RunLedger, mapped: Mapped) -> None:
    """Settle a mapped batch's rejected and filtered rows (the time window's are not)."""
    rejected: list[int] = []
    if mapped.rejects.num_rows:
        rejected = pc.unique(mapped.rejects.column("position")).to_pylist()
    positions = mapped.batch.positions
    ends = [int(positions.max()) + 1] if len(positions) else []
    ends += [m.position + 1 for m in mapped.batch.malformed]
    ledger.reject(rejected, mapped.filtered.tolist(), max(ends, default=0))


class _Bar:
    """Moves the progress bar to the rows settled so far."""

    def __init__(self, sender: Sender, report: Report, progress: Progress) -> None:
        self.sender, self.report, self.progress = sender, report, progress
        self.shown = 0

    def show(self) -> None:
        outcome, report = self.sender.outcome, self.report
        settled = outcome.sent + outcome.failed + report.rejected + report.filtered
        settled += report.skipped
        self.progress.advance(
            settled - self.shown,
            sent=outcome.sent,
            rejected=report.rejected,
            failed=outcome.failed,
            retrying=self.sender.retrying,
        )
        self.shown = settled


async def _tick(
    sender: Sender,
    ledger: Settlement,
    bar: _Bar,
    settings: RunSettings,
    ledger_thread: ThreadPoolExecutor,
    errors: list[BaseException],
) -> None:
    """Commit the ledger every flush_seconds (sooner when enough rows wait); move the bar.

    A commit that fails (disk full, I/O error) stops the run at once: nothing more is sent
    that could not be recorded, and the error is raised when the run has drained.
    """
    loop = asyncio.get_running_loop()
    last_flush = last_show = loop.time()
    while True:
        await asyncio.sleep(_TICK)
        now = loop.time()
        sender.report_acks()
        if now - last_flush >= settings.flush_seconds or ledger.due():
            try:
                await loop.run_in_executor(ledger_thread, ledger.flush)
            except ImporterError as exc:
                errors.append(exc)
                sender.stop("aborted")  # cut off: what arrives now could not be recorded
                return
            last_flush = now
        if now - last_show >= 0.2:
            bar.show()
            settings.progress.health(sender.last_error, sender.silent_for)
            last_show = now


def _fill(report: Report, outcome: Outcome, unknown: int) -> None:
    report.sent += outcome.sent
    report.failed += outcome.failed
    report.pending += outcome.pending
    report.unknown += unknown
    report.retries += outcome.retries
    report.maybe_twice += outcome.maybe_twice
    report.stopped = outcome.stopped
    report.add_failures(outcome.failures)
