"""Delivery: one transport, a bounded pool of workers, retries, give-up, graceful stop.

Rows arrive as :class:`Work` (a batch of URLs with their row identities) on a bounded queue,
so memory stays flat. ``concurrency`` workers take rows one at a time; transient failures
(connection errors, timeouts, 408, 425, 429, 5xx) go to a retry heap with capped exponential
backoff and full jitter, or the server's Retry-After; anything else non-2xx fails the row.
A transient failure counts against a row only when the endpoint was working meanwhile:
another request succeeded after this attempt started. A row fails permanently for a
transient cause only after ``max_attempts`` such failures; while the endpoint is down
nothing counts, the row stays pending, and the give-up watchdog stops the run resumably.

Requests go out through a transport (:mod:`importer.transport`), which only says how each
went; every rule above lives here. Two drivers feed one: a per-request transport (aiohttp's)
is driven by ``concurrency`` worker tasks, each awaiting one request at a time; a batch
transport (libcurl's, in its own thread) by one pump task that hands it every startable row
at once and settles what comes back in batches. Both take rows with :meth:`Sender._take`
and settle each attempt with :meth:`Sender._finish`, so the rules cannot differ. Time is
read from the running loop's clock only (``loop.time()``, what ``asyncio.sleep`` and
``wait_for`` use), so a virtual-time loop runs these rules in milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from importer.errors import DeliveryError, TransientError
from importer.options import SendOptions
from importer.transport import (
    NOT_SENT,
    TRANSIENT_STATUSES,
    AiohttpTransport,
    AnyTransport,
    BatchTransport,
    Transport,
    classify,
    parse_retry_after,
    translate,
    window,
)
from importer.work import Failure, Work

__all__ = [
    "TRANSIENT_STATUSES",
    "AiohttpTransport",
    "AnyTransport",
    "BatchTransport",
    "Failure",
    "NullTracker",
    "Outcome",
    "Sender",
    "Tracker",
    "Transport",
    "Work",
    "classify",
    "make_transport",
    "parse_retry_after",
    "translate",
]

# Statuses that say "the endpoint (or what is in front of it) cannot serve now", not "this
# request is wrong": like a refused connection, they count against a row only on evidence.
_ENDPOINT_STATUSES = frozenset({429, 502, 503, 504})
_RETRY_AFTER_MARGIN = 0.02  # arrive just after the server's moment, never just before


class Tracker(Protocol):
    """What the sender tells the ledger (or nobody) about each row's fate."""

    def done_many(self, positions: list[int]) -> None:
        """These rows were acknowledged with a 2xx."""

    def failed(self, failure: Failure) -> None:
        """The row failed permanently."""

    def unsent(self, positions: list[int], ambiguous: list[int]) -> None:
        """At a stop: rows never acknowledged; ``ambiguous`` ones may have arrived."""


class NullTracker:
    """Tracks nothing (no ledger)."""

    def done_many(self, positions: list[int]) -> None:
        return None

    def failed(self, failure: Failure) -> None:
        return None

    def unsent(self, positions: list[int], ambiguous: list[int]) -> None:
        return None


class _Item:
    """One row on its way: where it is in its Work, and how its attempts went."""

    __slots__ = (
        "attempts",
        "error",
        "first_started",
        "index",
        "maybe",
        "maybe_delivered",
        "started",
        "status",
        "strikes",
        "work",
    )

    def __init__(self, work: Work, index: int) -> None:
        self.work = work
        self.index = index
        self.attempts = 0
        self.started = 0.0  # when the current attempt began (the loop's clock)
        self.first_started = 0.0  # when its first attempt began
        self.strikes = 0  # failed attempts during which another request succeeded
        self.maybe = 0  # failed attempts whose request may have arrived (cut off, timed out)
        self.maybe_delivered = False
        self.status: int | None = None
        self.error = ""


@dataclass
class Outcome:
    """What a send run did, as counts (the report adds the rest)."""

    sent: int = 0
    failed: int = 0
    pending: int = 0
    unknown: int = 0
    retries: int = 0
    maybe_twice: int = 0  # retries of requests that may have arrived: the duplicate bound
    parked: int = 0  # rows left pending after max_attempts requests that may have arrived
    # None (finished), "interrupted", "gave-up", "aborted", "error", or "canary" (its rows
    # were sent; the rest are held back, pending).
    stopped: str | None = None
    failures: list[Failure] = field(default_factory=list)


def make_transport(options: SendOptions) -> AnyTransport:
    """The transport ``options.transport`` names: "aiohttp" (the default) or "curl" (its
    module, and pycurl, are imported only then); ``options.workers`` sender processes of it
    when more than one; one on each worker of the Dask cluster at ``options.dask``."""
    if options.dask is not None:
        from importer.cluster import DaskPool

        return DaskPool(options)
    if options.workers > 1:
        from importer.workers import WorkerPool

        return WorkerPool(options)
    if options.transport == "curl":
        from importer.curl import CurlTransport

        return CurlTransport(options)
    return AiohttpTransport(options)


class Sender:
    """Delivers Work from a queue through one transport.

    Args:
        options: how to send.
        tracker: told of every row's fate (the ledger).
        on_done: called with the (event names, values, times, currencies) of the rows
            acknowledged since the last call, as four lists (every tick, not per request).
        transport: sends the requests; the one ``options.transport`` names if None.
    """

    def __init__(
        self,
        options: SendOptions,
        *,
        tracker: Tracker | None = None,
        on_done: Callable[[list[str], list[int | None], list[int], list[str | None]], None]
        | None = None,
        transport: AnyTransport | None = None,
    ) -> None:
        self.options = options
        self.transport: AnyTransport = transport or make_transport(options)
        # Whether the transport takes URLs as text (the feed builds Work that way then).
        self.text_urls: bool = getattr(self.transport, "takes_text_urls", False)
        self.tracker = tracker or NullTracker()
        self.on_done = on_done
        self.outcome = Outcome()
        self.queue: asyncio.Queue[Work | None] = asyncio.Queue(maxsize=2)
        self._retry: list[tuple[float, int, _Item]] = []
        self._seq = 0
        self._current: Work | None = None
        self._cursor = 0
        self._input_done = False
        self._inflight: set[_Item] = set()
        self._cancelled: list[_Item] = []
        self._held: list[_Item] = []  # taken but never sent (the pump was stopped at --rate)
        self._parked: list[_Item] = []
        self._orphans: list[Work] = []
        self._held_back = 0  # rows read but kept back (--canary): pending, never leased
        self._acked: list[_Item] = []
        self.last_error = ""
        self._stop: str | None = None
        self._wake = asyncio.Event()
        self._sleepers = 0
        # The clock: the running loop's once run() starts (that of sleeps and timeouts).
        self._now: Callable[[], float] = time.monotonic
        self._last_success = self._now()
        self._retry_limit = max(64, options.concurrency * 8)
        self._limiter: Any = None
        self._random = random.Random()
        # The batch transport and how many rows it holds (None: a per-request transport).
        self._batch: BatchTransport | None = None
        self._window = window(options.concurrency)

    # -- control --------------------------------------------------------------------------

    def stop(self, reason: str = "interrupted") -> None:
        """Stop taking rows. "interrupted" and "error" let in-flight requests finish (up to
        the drain timeout); "gave-up" and "aborted" cut them off."""
        if self._stop is None or reason == "aborted":
            self._stop = reason
        if self._batch is not None:
            self._batch.drain()  # what it holds and has not started stays pending
        self._notify()

    @property
    def silent_for(self) -> float:
        """Seconds since the last success while rows are in flight or waiting (else 0)."""
        if not (self._retry or self._inflight):
            return 0.0
        return max(0.0, self._now() - self._last_success)

    @property
    def retrying(self) -> int:
        """Rows waiting for a retry."""
        return len(self._retry)

    def _notify(self) -> None:
        if self._sleepers:  # only idle workers wait on the event; most of the time none does
            wake, self._wake = self._wake, asyncio.Event()
            wake.set()

    @property
    def accepting(self) -> bool:
        """Whether more rows are wanted (False once the run is stopping)."""
        return self._stop is None

    async def put(self, work: Work) -> None:
        """Queue rows to send; waits while the queue is full (that is the backpressure).

        Rows offered after a stop are kept aside and settled as pending.
        """
        if not await self._offer(work):
            self._orphans.append(work)

    async def _offer(self, item: Work | None) -> bool:
        """Put on the queue unless the run stops first (no worker would take it then)."""
        while self._stop is None:
            try:
                async with asyncio.timeout(0.2):  # not wait_for: see _idle
                    await self.queue.put(item)
            except TimeoutError:
                continue
            self._notify()
            return True
        return False

    def orphan(self, work: Work | None) -> None:
        """Rows read after a stop, never queued: settled as pending."""
        if work is not None:
            self._orphans.append(work)

    def hold_back(self, count: int) -> None:
        """Rows read and valid, but not to be sent in this run (--canary): pending."""
        self._held_back += count

    async def feed_done(self) -> None:
        """No more Work will come."""
        await self._offer(None)

    # -- running --------------------------------------------------------------------------

    async def run(self) -> Outcome:
        """Send until the queue is exhausted, the run is stopped, or the endpoint is down.

        Call :meth:`settle` afterwards, once nothing feeds the queue any more.
        """
        opts = self.options
        self._now = asyncio.get_running_loop().time
        self._last_success = self._now()  # silence is counted from the start of sending
        if opts.rate:
            from aiolimiter import AsyncLimiter

            # "At most N per second" in every second, the first included: a bucket of N per
            # 1 s would let 2N through in the first (it starts full). Its capacity is a tenth
            # of a second's worth (at least one request). Paced on the loop's clock too.
            period = max(0.1, 1.0 / opts.rate)
            self._limiter = AsyncLimiter(opts.rate * period, period)
        transport = self.transport
        async with transport:
            if isinstance(transport, BatchTransport):  # once: a Protocol check costs ~6 µs
                self._batch = transport
                self._window = getattr(transport, "holds", self._window)
                drivers = [asyncio.create_task(self._pump(transport))]
            else:
                drivers = [asyncio.create_task(self._worker()) for _ in range(opts.concurrency)]
            watchdog = asyncio.create_task(self._watch())
            try:
                await self._drain(drivers)
            finally:
                watchdog.cancel()
                for task in drivers:
                    task.cancel()
                await asyncio.gather(*drivers, watchdog, return_exceptions=True)
                batch, self._batch = self._batch, None  # no refill from here on
                if batch is not None:
                    # Cut off what is still out; what finished before that is settled first,
                    # what was never written comes back NOT_SENT.
                    await batch.cancel()
                    self._cancelled += self._inflight  # cut off mid-request: may have arrived
                    self._inflight.clear()
        return self.outcome

    async def _drain(self, drivers: list[asyncio.Task[None]]) -> None:
        """Wait for the drivers; after a graceful stop, in-flight requests get drain_timeout."""
        waiting = asyncio.gather(*drivers)
        deadline: float | None = None
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=0.1)
            if done:
                waiting.result()
                return
            if self._stop in ("gave-up", "aborted"):
                break  # in-flight requests are cut off at once
            if self._stop is not None:
                if deadline is None:
                    deadline = self._now() + self.options.drain_timeout
                if self._now() >= deadline:
                    break
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)

    async def _watch(self) -> None:
        """Give up when nothing has succeeded for give_up_after seconds while rows wait."""
        while True:
            await asyncio.sleep(0.25)
            busy = bool(self._retry or self._inflight)
            silent = self._now() - self._last_success
            if busy and self._stop is None and silent > self.options.give_up_after:
                self.outcome.stopped = "gave-up"
                self.stop("gave-up")

    async def _worker(self) -> None:
        """The per-request driver: one of ``concurrency`` tasks, one request at a time."""
        transport = self.transport
        assert not isinstance(transport, BatchTransport)
        get, limiter, finish = transport.get, self._limiter, self._finish
        while True:
            item = self._take()
            if item is None:
                if self._finished():
                    self._notify()
                    return
                await self._idle()
                continue
            self._begin(item)
            try:  # one attempt (inline: this runs once per request)
                if limiter is not None:
                    await limiter.acquire()
                await get(item.work.urls[item.index])
            except DeliveryError as err:
                finish(item, err)
            except asyncio.CancelledError:
                self._inflight.discard(item)
                self._cancelled.append(item)  # cut off mid-request: it may have arrived
                raise
            else:
                finish(item, None)
            self._notify()

    async def _pump(self, transport: BatchTransport) -> None:
        """The batch driver: hands the transport every row that may start, up to its
        window (``concurrency`` out and as many ready, so its thread never waits for this
        loop to refill), then waits for a retry's time, new rows, a stop or the end.

        Outcomes arrive in :meth:`_completed`, which refills the freed slots itself: the
        pump is woken only when slots stay free (nothing to take now) or the run ends.
        """
        limit, limiter = self._window, self._limiter
        while True:
            if limiter is None:
                self._fill(transport)
            else:
                await self._fill_paced(transport, limiter)
            if self._finished():
                self._notify()
                return
            # With every slot taken, only a completion can let a row start: a due retry
            # must not wake the pump (it would spin until one comes).
            await self._idle(retries=len(self._inflight) < limit)

    def _fill(self, transport: BatchTransport) -> bool:
        """Hand over every row that may start now; True if slots stay free."""
        limit, inflight, take = self._window, self._inflight, self._take
        batch: list[tuple[Any, _Item]] = []
        now = self._now()
        while len(inflight) < limit:
            item = take()
            if item is None:
                break
            inflight.add(item)  # _begin, inline: this runs once per request
            item.attempts += 1
            item.started = now
            if item.attempts == 1:
                item.first_started = now
            batch.append((item.work.urls[item.index], item))
        if batch:
            transport.send(batch, self._completed)
        return len(inflight) < limit

    async def _fill_paced(self, transport: BatchTransport, limiter: Any) -> None:
        """:meth:`_fill` at ``--rate``: one row per limiter slot, each sent as it is let go
        (and no more out than ``concurrency``: none waits in the transport)."""
        while len(self._inflight) < self.options.concurrency:
            item = self._take()
            if item is None:
                return
            self._held.append(item)
            await limiter.acquire()
            if self._stop is not None:
                return  # stopped while waiting: never sent, it stays pending (in _held)
            self._held.pop()
            self._begin(item)
            transport.send([(item.work.urls[item.index], item)], self._completed)

    def _completed(self, results: list[tuple[Any, DeliveryError | None]]) -> None:
        """A batch transport's outcomes (on the loop's thread): (item, None or the error)."""
        inflight, acked = self._inflight, self._acked
        failed: list[tuple[_Item, DeliveryError]] = []
        succeeded = False
        for item, err in results:
            if err is None:  # _finish's first case, inline: this runs once per request
                inflight.discard(item)
                acked.append(item)
                succeeded = True
            elif err is NOT_SENT:  # cut off before it was written: no attempt, pending
                inflight.discard(item)
                item.attempts -= 1
                self._held.append(item)
            else:
                failed.append((item, err))
        # Outcomes of one batch came together: a success among them is evidence that the
        # endpoint worked while the others failed (as it is when it came just before).
        if succeeded:
            self._last_success = self._now()
        for item, err in failed:
            self._finish(item, err)
        batch = self._batch
        if batch is not None and self._limiter is None and not self._fill(batch):
            return  # every slot is out again: the next outcome comes here
        self._notify()

    def _begin(self, item: _Item) -> None:
        self._inflight.add(item)
        item.attempts += 1
        item.started = self._now()
        if item.attempts == 1:
            item.first_started = item.started

    def _finish(self, item: _Item, err: DeliveryError | None) -> None:
        """One attempt's outcome: acknowledged (None), retried, or failed."""
        self._inflight.discard(item)
        if err is None:
            self._last_success = self._now()
            self._acked.append(item)
        elif isinstance(err, TransientError):
            self._transient(item, err)
        else:
            self._fail(item, err)

    def _take(self) -> _Item | None:
        if self._stop is not None:
            return None
        if self._retry and self._retry[0][0] <= self._now():
            return heapq.heappop(self._retry)[2]
        if len(self._retry) >= self._retry_limit:
            return None  # too many rows failing: let retries drain before taking new ones
        while self._current is None or self._cursor >= len(self._current):
            if self._input_done:
                return None
            try:
                work = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                return None
            if work is None:
                self._input_done = True
                return None
            self._current, self._cursor = work, 0
        item = _Item(self._current, self._cursor)
        self._cursor += 1
        return item

    def _finished(self) -> bool:
        if self._inflight:
            return False
        if self._stop is not None:
            return True
        fresh_left = self._current is not None and self._cursor < len(self._current)
        return self._input_done and not self._retry and not fresh_left

    async def _idle(self, retries: bool = True) -> None:
        """Wait for a notify, or until the next retry is due (when ``retries``)."""
        wait = 1.0
        # Once stopping no retry is taken: never wake for one (that would spin).
        if retries and self._retry and self._stop is None:
            wait = min(wait, max(0.0, self._retry[0][0] - self._now()))
        wake = self._wake
        self._sleepers += 1
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation
            # that comes as the event is set, and a cut-off driver would then carry on.
            async with asyncio.timeout(wait):
                await wake.wait()
        except TimeoutError:
            pass
        finally:
            self._sleepers -= 1

    def report_acks(self) -> int:
        """Hand the rows acknowledged since the last call to the tracker and ``on_done``.

        Called every tick and at the end, so the per-request path only appends to a list.
        """
        acked, self._acked = self._acked, []
        if not acked:
            return 0
        self.outcome.sent += len(acked)
        self.tracker.done_many([item.work.positions[item.index] for item in acked])
        if self.on_done is not None:
            self.on_done(
                [item.work.names[item.index] for item in acked],
                [item.work.values[item.index] for item in acked],
                [item.work.times[item.index] for item in acked],
                [
                    item.work.currencies[item.index] if item.work.currencies is not None else None
                    for item in acked
                ],
            )
        return len(acked)

    def _transient(self, item: _Item, err: DeliveryError) -> None:
        """A failed attempt worth retrying: retry it, fail the row, or leave it unknown.

        * A request that may have arrived (cut off or timed out after it was written)
          counts always: after ``max_attempts`` of those the row is parked, unknown, for the
          next run's ``--unknown`` policy; each retry of one adds to the duplicate bound.
        * Otherwise a failure counts against the row (a strike) only on evidence that the
          endpoint worked while this row failed: for the server's own answer about this
          request (500, 408...) a success of another request since the row's first attempt;
          for what an outage looks like (no answer, 429, 502-504) a success during this very
          attempt. After ``max_attempts`` strikes the row fails permanently.
        """
        item.status, item.error = err.status, err.reason
        self.last_error = err.reason
        item.maybe_delivered |= err.maybe_delivered
        if err.maybe_delivered:
            item.maybe += 1
            if item.maybe >= self.options.max_attempts:
                self.outcome.parked += 1
                self._parked.append(item)
                return
            self.outcome.maybe_twice += 1
        answered = err.status is not None and err.status not in _ENDPOINT_STATUSES
        since = item.first_started if answered else item.started
        if not err.maybe_delivered and self._last_success > since:
            item.strikes += 1
            if item.strikes >= self.options.max_attempts:
                self._fail(item, err)  # the endpoint works, this row keeps failing
                return
        self.outcome.retries += 1
        delay = self._delay(item.attempts, err.retry_after)
        self._seq += 1
        heapq.heappush(self._retry, (self._now() + delay, self._seq, item))

    def _delay(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.options.max_retry_after) + _RETRY_AFTER_MARGIN
        bound = min(
            self.options.backoff_cap, self.options.backoff_base * 2 ** min(attempts - 1, 30)
        )
        return self._random.uniform(0, bound)

    def _fail(self, item: _Item, err: DeliveryError) -> None:
        work, i = item.work, item.index
        self.last_error = err.reason
        failure = Failure(
            work.positions[i],
            work.file,
            work.rows[i],
            work.lines[i],
            str(work.urls[i]),
            item.attempts,
            err.status,
            err.reason,
            work.currencies[i] if work.currencies is not None else None,
        )
        self.outcome.failed += 1
        self.outcome.failures.append(failure)
        self.tracker.failed(failure)

    def settle(self) -> Outcome:
        """After a stop: every row not acknowledged or failed is pending.

        The tracker is told which pending rows may have arrived (their request was cut off).
        """
        self.report_acks()
        self._cancelled += self._inflight  # still out (a driver died): it may have arrived
        self._inflight.clear()
        for item in self._cancelled:
            item.maybe_delivered = True
        items = [entry[2] for entry in self._retry] + self._cancelled + self._parked + self._held
        positions = [item.work.positions[item.index] for item in items]
        ambiguous = [item.work.positions[item.index] for item in items if item.maybe_delivered]
        if self._current is not None:
            positions += self._current.positions[self._cursor :]
        for work in self._orphans:
            positions += work.positions
        self._orphans.clear()
        while not self.queue.empty():
            queued = self.queue.get_nowait()
            if queued is not None:
                positions += queued.positions
        self._retry.clear()
        self._cancelled.clear()
        self._parked.clear()
        self._held.clear()
        self._current = None
        self.outcome.pending = len(positions) + self._held_back
        self.outcome.unknown = len(ambiguous)
        if positions:
            self.tracker.unsent(positions, ambiguous)
        if self.outcome.stopped is None and self._stop is not None:
            self.outcome.stopped = self._stop
        return self.outcome
