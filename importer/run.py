"""A send run: the producer (read → map → ledger admit) feeding the sender, and its report.

Reading and mapping run in threads; the event loop only moves Work and requests. The run
stops when every row is settled, when asked to (Ctrl-C, SIGTERM, a notebook interrupt),
or when the endpoint is down; then in-flight requests drain, the ledger commits, and the
report says what is pending and how to resume.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from importer.collector import Collector
from importer.errors import ImporterError
from importer.ledger import Admitted
from importer.mapping import Mapped, Mapper
from importer.pipeline import mapped_batches
from importer.progress import NullProgress, Progress
from importer.report import RejectsWriter, Report
from importer.sender import Failure, Outcome, Sender, SendOptions
from importer.source import DEFAULT_BATCH_SIZE, Source

SANDBOX_ENDPOINT = "sandbox"
_TICK = 0.2


class RunLedger(Protocol):
    """The ledger calls a run makes (see :mod:`importer.ledger`)."""

    def settled_range(self, start: int, stop: int) -> bool: ...
    def settled_mask(self, positions: Any) -> Any: ...
    def admit(self, mapped: Mapped) -> Admitted: ...
    def done(self, position: int) -> None: ...
    def failed(self, failure: Failure) -> None: ...
    def unsent(self, positions: list[int], ambiguous: list[int]) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


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
    batch_size: int = DEFAULT_BATCH_SIZE
    sandbox: bool = False
    progress: Progress = field(default_factory=NullProgress)
    control: Control = field(default_factory=Control)
    rejects: RejectsWriter | None = None


async def deliver(
    source: Source,
    mapper: Mapper,
    ledger: RunLedger,
    report: Report,
    settings: RunSettings,
) -> Outcome:
    """Send every unsettled row of a source; fill ``report``; return the sender's outcome."""
    loop = asyncio.get_running_loop()
    collector: Collector | None = None
    if settings.sandbox:
        collector = Collector()
        mapper.endpoint = await collector.start()
        report.notes.append(f"sandbox: sent to a local collector at {mapper.endpoint}")
    sender = Sender(settings.options, tracker=ledger, on_done=report.stats.add_one)
    settings.control.attach(loop, sender)
    ledger_thread = ThreadPoolExecutor(1, thread_name_prefix="ledger")
    errors: list[BaseException] = []
    producer = asyncio.create_task(
        _produce(source, mapper, ledger, sender, report, settings, ledger_thread, errors))
    ticker = asyncio.create_task(_tick(sender, ledger, report, settings.progress, ledger_thread))
    settings.progress.start(source.total_rows(), "rows")
    try:
        await sender.run()
        await producer
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
        outcome = sender.settle()
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
        await loop.run_in_executor(ledger_thread, ledger.flush)
        ledger_thread.shutdown(wait=True)
        settings.progress.close()
        if settings.rejects is not None:
            settings.rejects.close()
            report.rejects_path = str(settings.rejects.path)
        if collector is not None:
            report.extra["collector"] = collector.stats.to_dict()
            await collector.stop()
    _fill(report, outcome)
    if errors:
        raise errors[0]
    report.notes += stop_notes(outcome, settings.options, sender.last_error)
    return outcome


def stop_notes(outcome: Outcome, options: SendOptions, last_error: str) -> list[str]:
    """What a user must know when a run stopped before the end."""
    notes = []
    if outcome.stopped == "gave-up":
        notes.append(
            f"stopped: nothing was delivered for {options.give_up_after:g} s (last error: "
            f"{last_error or 'none'}). Check the endpoint and the network, then run the same "
            "command again to resume."
        )
    elif outcome.stopped in ("interrupted", "aborted"):
        notes.append(f"stopped on request with {outcome.pending:,} rows pending: run the same "
                     "command again to resume.")
    elif outcome.stopped == "error":
        notes.append("stopped by an error reading the input (below).")
    if outcome.unknown:
        notes.append(f"{outcome.unknown:,} of the pending rows may have arrived (their request "
                     "was cut off or timed out): resuming resends them unless --unknown skip.")
    if outcome.failed:
        notes.append(f"{outcome.failed:,} rows failed permanently: see the failures, fix the "
                     "cause, then run `event-backfill retry`.")
    return notes


async def _produce(
    source: Source, mapper: Mapper, ledger: RunLedger, sender: Sender, report: Report,
    settings: RunSettings, ledger_thread: ThreadPoolExecutor, errors: list[BaseException],
) -> None:
    """Read and map in a thread, admit through the ledger, queue Work for the sender."""
    loop = asyncio.get_running_loop()
    reader = ThreadPoolExecutor(1, thread_name_prefix="reader")
    batches: Iterator[Mapped] = mapped_batches(
        source, mapper, batch_size=settings.batch_size, ledger=ledger)
    try:
        while sender.accepting:
            mapped = await loop.run_in_executor(reader, next, batches, None)
            if mapped is None:
                break
            admitted = await loop.run_in_executor(ledger_thread, ledger.admit, mapped)
            report.add_mapped(mapped)
            if settings.rejects is not None:
                settings.rejects.write(mapped.rejects)
            report.skipped_done += mapped.batch.skipped
            report.skipped_duplicate += admitted.duplicates
            if admitted.work is not None:
                await sender.put(admitted.work)
        await sender.feed_done()
    except ImporterError as exc:
        errors.append(exc)
        sender.stop("error")
    finally:
        reader.submit(batches.close)
        reader.shutdown(wait=False)


async def _tick(sender: Sender, ledger: RunLedger, report: Report, progress: Progress,
                ledger_thread: ThreadPoolExecutor) -> None:
    """Every ~200 ms: commit the ledger and move the progress bar."""
    loop = asyncio.get_running_loop()
    shown = 0
    while True:
        await asyncio.sleep(_TICK)
        await loop.run_in_executor(ledger_thread, ledger.flush)
        settled = (sender.outcome.sent + sender.outcome.failed + report.rejected + report.skipped)
        progress.advance(settled - shown, sent=sender.outcome.sent, rejected=report.rejected,
                         failed=sender.outcome.failed, retrying=sender.retrying)
        shown = settled


def _fill(report: Report, outcome: Outcome) -> None:
    report.sent += outcome.sent
    report.failed += outcome.failed
    report.pending += outcome.pending
    report.extra["unknown"] = outcome.unknown
    report.extra["retries"] = outcome.retries
    report.extra["stopped"] = outcome.stopped
    if outcome.failures:
        report.set_failures(pd.DataFrame([f.__dict__ for f in outcome.failures]).drop(columns=["position"]))


