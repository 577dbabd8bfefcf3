"""The sender's rules one by one: a scripted transport on a virtual clock.

Each test scripts what every request does (answer 2xx or a status, be refused, time out, hang)
and runs a real :class:`Sender` on a virtual-time loop (:mod:`tests.virtual_clock`): backoffs,
Retry-After, give_up_after and drain_timeout take their full virtual time and milliseconds of
real time. Times below are virtual seconds since the run started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http import HTTPStatus
from typing import Any

import pyarrow as pa
import pytest
from aiohttp import web
from yarl import URL

import importer
from importer import run as run_module
from importer._version import __version__
from importer.errors import PermanentError, TransientError
from importer.options import SendOptions
from importer.report import Report
from importer.sender import Outcome, Sender
from importer.transport import AiohttpTransport, answer_error, classify, parse_retry_after
from importer.work import Failure, Work

from .batched import Batched
from .virtual_clock import run_virtual

ENDPOINT = "http://endpoint.test/event"
FIRST = 1_000  # the first row's position: positions are not indices
FILE = "sales.csv"

# -- the sender's two drivers: every test runs through both -----------------------------------

_driver = "per-request"


@pytest.fixture(autouse=True, params=["per-request", "batch"])
def driver(request: pytest.FixtureRequest) -> Any:
    """Per-request: ``concurrency`` worker tasks await the scripted ``get`` (aiohttp's shape).
    Batch: the pump hands requests to :class:`Batched` and settles its batched outcomes
    (curl's shape)."""
    global _driver
    _driver = request.param
    yield request.param
    _driver = "per-request"


def driven(transport: ScriptedTransport, concurrency: int) -> Any:
    """The scripted transport as the current driver takes it."""
    return Batched(transport, concurrency) if _driver == "batch" else transport


# -- what one request does ---------------------------------------------------------------------


@dataclass(frozen=True)
class Ok:
    after: float = 0.01  # virtual seconds until the answer


@dataclass(frozen=True)
class Status:
    code: int
    retry_after: str | None = None
    location: str | None = None
    after: float = 0.01


@dataclass(frozen=True)
class Refused:
    after: float = 0.0


@dataclass(frozen=True)
class TimedOut:
    after: float = 30.0


@dataclass(frozen=True)
class Hang:
    """Never answers: ends only when cancelled."""


Step = Ok | Status | Refused | TimedOut | Hang
Script = Callable[[int, int, float], Step]  # (position, attempt from 1, seconds since start)


def per_row(steps: dict[int, list[Step]], default: Step | None = None) -> Script:
    """Each listed row's attempts in order (the last repeats); other rows get ``default``."""
    other = default or Ok()

    def script(position: int, attempt: int, now: float) -> Step:
        mine = steps.get(position)
        return mine[min(attempt, len(mine)) - 1] if mine else other

    return script


def always(step: Step) -> Script:
    return lambda position, attempt, now: step


@dataclass
class Call:
    position: int
    attempt: int
    start: float
    end: float | None = None
    result: str = ""


class ScriptedTransport:
    """Plays a script; records every call and how many were in flight at once."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.calls: list[Call] = []
        self.attempts: Counter[int] = Counter()
        self.inflight = 0
        self.most_inflight = 0
        self.entered = self.exited = 0
        self.t0 = 0.0

    async def __aenter__(self) -> ScriptedTransport:
        self.entered += 1
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.exited += 1

    async def get(self, url: URL) -> None:
        loop = asyncio.get_running_loop()
        position = int(url.query["row"])
        self.attempts[position] += 1
        call = Call(position, self.attempts[position], loop.time() - self.t0)
        self.calls.append(call)
        step = self.script(position, call.attempt, call.start)
        self.inflight += 1
        self.most_inflight = max(self.most_inflight, self.inflight)
        try:
            if isinstance(step, Hang):
                await loop.create_future()
            elif step.after:
                await asyncio.sleep(step.after)
            if isinstance(step, Ok):
                call.result = "ok"
            elif isinstance(step, Status):
                call.result = str(step.code)
                headers = {}
                if step.retry_after is not None:
                    headers["Retry-After"] = step.retry_after
                if step.location is not None:
                    headers["Location"] = step.location
                error = answer_error(step.code, HTTPStatus(step.code).phrase, headers)
                if error is not None:
                    raise error
            elif isinstance(step, Refused):
                call.result = "refused"
                raise TransientError("cannot connect: connection refused", maybe_delivered=False)
            elif isinstance(step, TimedOut):
                call.result = "timeout"
                raise TransientError("timed out waiting for the answer")  # may have arrived
        except asyncio.CancelledError:
            call.result = "cancelled"
            raise
        finally:
            self.inflight -= 1
            call.end = loop.time() - self.t0


class FakeTracker:
    """An in-memory ledger: what the sender (and a run) tells it."""

    def __init__(self) -> None:
        self.done: list[int] = []
        self.done_calls = 0
        self.failures: list[Failure] = []
        self.unsent_calls: list[tuple[list[int], list[int]]] = []
        self.flushed: list[int] = []  # rows done at each flush

    def done_many(self, positions: list[int]) -> None:
        self.done += positions
        self.done_calls += 1

    def failed(self, failure: Failure) -> None:
        self.failures.append(failure)

    def unsent(self, positions: list[int], ambiguous: list[int]) -> None:
        self.unsent_calls.append((list(positions), list(ambiguous)))

    def due(self) -> bool:
        return False

    def flush(self) -> None:
        self.flushed.append(len(self.done))

    @property
    def unknown_now(self) -> int:
        return sum(len(ambiguous) for _, ambiguous in self.unsent_calls)

    @property
    def pending(self) -> list[int]:
        return sorted(p for positions, _ in self.unsent_calls for p in positions)

    @property
    def ambiguous(self) -> list[int]:
        return sorted(p for _, ambiguous in self.unsent_calls for p in ambiguous)


def works(n: int, batch: int = 10) -> list[Work]:
    """``n`` rows at positions FIRST.., in Work of ``batch`` rows."""
    out = []
    for start in range(0, n, batch):
        positions = list(range(FIRST + start, FIRST + min(n, start + batch)))
        out.append(
            Work(
                positions=positions,
                urls=[URL(f"{ENDPOINT}?row={p}", encoded=True) for p in positions],
                names=["purchase" if p % 2 else "refund" for p in positions],
                values=[p * 100 for p in positions],
                times=[1_700_000_000 + p for p in positions],
                file=FILE,
                rows=[p - FIRST + 1 for p in positions],
                lines=[p - FIRST + 2 for p in positions],
                currencies=["EUR" if p % 3 else "USD" for p in positions],
            )
        )
    return out


def expected_failure(position: int, attempts: int, status: int | None, error: str) -> Failure:
    return Failure(
        position=position,
        file=FILE,
        row=position - FIRST + 1,
        line=position - FIRST + 2,
        url=f"{ENDPOINT}?row={position}",
        attempts=attempts,
        status=status,
        error=error,
        currency="EUR" if position % 3 else "USD",
    )


@dataclass
class Run:
    outcome: Outcome
    tracker: FakeTracker
    transport: ScriptedTransport
    took: float  # virtual seconds until run() returned
    acked: list[tuple[str, int | None, int, str | None]] = field(default_factory=list)

    @property
    def calls(self) -> list[Call]:
        return self.transport.calls

    def calls_of(self, position: int) -> list[Call]:
        return [c for c in self.calls if c.position == position]


def send(
    script: Script,
    n: int = 20,
    *,
    batch: int = 10,
    stops: tuple[tuple[float, str], ...] = (),
    **options: Any,
) -> Run:
    """Send ``n`` rows through a Sender on a virtual clock; stop it at the given times."""
    opts = SendOptions(**{"concurrency": 4, **options})
    return run_virtual(_send(script, works(n, batch), opts, stops))


async def _send(
    script: Script, work: list[Work], opts: SendOptions, stops: tuple[tuple[float, str], ...]
) -> Run:
    loop = asyncio.get_running_loop()
    transport, tracker = ScriptedTransport(script), FakeTracker()
    acked: list[tuple[str, int | None, int, str | None]] = []
    sender = Sender(
        opts,
        tracker=tracker,
        transport=driven(transport, opts.concurrency),
        on_done=lambda *columns: acked.extend(zip(*columns, strict=True)),
    )
    t0 = transport.t0 = loop.time()

    async def feed() -> None:
        for w in work:
            await sender.put(w)
        await sender.feed_done()

    async def stop() -> None:
        for at, reason in stops:
            await asyncio.sleep(t0 + at - loop.time())
            sender.stop(reason)

    feeder, stopper = asyncio.create_task(feed()), asyncio.create_task(stop())
    await sender.run()
    took = loop.time() - t0
    await feeder
    stopper.cancel()
    outcome = sender.settle()
    result = Run(outcome, tracker, transport, took, acked)
    _assert_accounted(result, sum(len(w) for w in work))
    return result


def _assert_accounted(run: Run, n: int) -> None:
    """Every row is acknowledged, failed or pending: exactly one of them, told once."""
    done, failed = run.tracker.done, [f.position for f in run.tracker.failures]
    pending = run.tracker.pending
    assert sorted(done + failed + pending) == list(range(FIRST, FIRST + n))
    assert len(run.tracker.unsent_calls) <= 1
    assert set(run.tracker.ambiguous) <= set(pending)
    outcome = run.outcome
    assert (outcome.sent, outcome.failed, outcome.pending) == (len(done), len(failed), len(pending))
    assert outcome.unknown == len(run.tracker.ambiguous)
    assert outcome.failures == run.tracker.failures
    assert run.transport.entered == run.transport.exited == 1


def positions(first: int, count: int) -> list[int]:
    return list(range(FIRST + first, FIRST + first + count))


# -- success and the tracker -------------------------------------------------------------------


def test_every_row_is_sent_once_and_the_tracker_told_once() -> None:
    """25 rows in three Work: each requested once, at most ``concurrency`` at a time; the
    tracker gets every position once, on_done every row's (name, value, time, currency)."""
    run = send(always(Ok()), 25, concurrency=4)
    assert sorted(c.position for c in run.calls) == positions(0, 25)
    assert run.transport.most_inflight == 4
    assert sorted(run.tracker.done) == positions(0, 25)
    assert run.tracker.failures == [] and run.tracker.unsent_calls == []
    assert sorted(run.acked) == sorted(
        (
            "purchase" if p % 2 else "refund",
            p * 100,
            1_700_000_000 + p,
            "EUR" if p % 3 else "USD",
        )
        for p in positions(0, 25)
    )
    assert run.outcome.stopped is None and run.outcome.retries == 0
    # 25 rows, 4 at a time, 0.01 s each: 7 rounds, not 25 (nor one: at most 4 at once)
    assert run.took == pytest.approx(0.07, abs=0.005)


# -- retry timing --------------------------------------------------------------------------------


def test_backoff_doubles_with_full_jitter_up_to_backoff_cap() -> None:
    """Retry k waits uniform(0, min(cap, base * 2**(k-1))): bounds 1, 2, 4, then 5 (the cap).

    100 rows refused six times each: every wait lies within its bound, and the waits spread
    over it (some near 0, some near the bound), so the jitter is full, the cap 5 and not 4.
    """
    script = per_row({p: [Refused()] * 6 + [Ok()] for p in positions(0, 100)})
    run = send(script, 100, concurrency=4, backoff_base=1.0, backoff_cap=5.0, give_up_after=1e6)
    assert run.outcome.sent == 100 and run.outcome.retries == 600 and run.outcome.failed == 0
    waits: dict[int, list[float]] = {k: [] for k in range(1, 7)}
    for p in positions(0, 100):
        calls = run.calls_of(p)
        assert [c.result for c in calls] == ["refused"] * 6 + ["ok"]
        for k in range(1, 7):
            waits[k].append(calls[k].start - calls[k - 1].end)  # type: ignore[operator]
    for k, bound in zip(range(1, 7), (1, 2, 4, 5, 5, 5), strict=True):
        assert all(-1e-9 <= w <= bound + 1e-9 for w in waits[k]), (k, max(waits[k]))
        assert max(waits[k]) > 0.8 * bound and min(waits[k]) < 0.2 * bound, k
    assert max(waits[4] + waits[5] + waits[6]) > 4.0  # capped at 5, not at 4


def test_retry_after_is_honoured_to_its_moment_and_capped() -> None:
    """503 Retry-After: 30 retries 30 s (+ the 0.02 s margin) after the answer, though the
    backoff cap is 1 s; 429 Retry-After: 600 waits max_retry_after (120 s), not 600."""
    a, b = FIRST + 3, FIRST + 7
    script = per_row({a: [Status(503, retry_after="30"), Ok()], b: [Status(429, "600"), Ok()]})
    run = send(script, 10, backoff_cap=1.0, max_retry_after=120.0)
    first, second = run.calls_of(a)
    assert second.start - first.end == pytest.approx(30.02, abs=1e-6)  # type: ignore[operator]
    first, second = run.calls_of(b)
    assert second.start - first.end == pytest.approx(120.02, abs=1e-6)  # type: ignore[operator]
    assert run.outcome.sent == 10 and run.outcome.retries == 2
    assert run.took == pytest.approx(second.end, abs=0.001)  # the run waited for it, no longer


def test_retry_after_parsing() -> None:
    """Seconds or an HTTP date (relative to now, never negative); anything else is ignored."""
    now = 1_767_225_600.0
    in_90s = format_datetime(datetime.fromtimestamp(now + 90, UTC), usegmt=True)
    past = format_datetime(datetime.fromtimestamp(now - 90, UTC), usegmt=True)
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after(in_90s, now) == pytest.approx(90.0)
    assert parse_retry_after(past, now) == 0.0
    for ignored in (None, "", "soon", "-5", "1.2.3"):
        assert parse_retry_after(ignored, now) is None, ignored


# -- what each answer means ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "error"),
    [
        (Status(400), "400 Bad Request"),
        (Status(404), "404 Not Found"),
        (Status(410), "410 Gone"),
        (Status(422), "422 Unprocessable Entity"),
        (
            Status(302, location="https://elsewhere.test/event"),
            "302 Found (redirect to https://elsewhere.test/event not followed)",
        ),
        (Status(301), "301 Moved Permanently (redirect to ? not followed)"),
    ],
)
def test_a_client_error_or_redirect_fails_the_row_at_once(step: Status, error: str) -> None:
    """No retry; the Failure carries the row's position, file, row, line, URL, attempts 1,
    the status and its text (a redirect's says where it pointed); the other rows arrive."""
    bad = FIRST + 5
    run = send(per_row({bad: [step, Ok()]}), 12)
    assert len(run.calls_of(bad)) == 1
    assert run.tracker.failures == [expected_failure(bad, 1, step.code, error)]
    assert sorted(run.tracker.done) == [p for p in positions(0, 12) if p != bad]
    assert run.outcome.retries == 0 and run.tracker.unsent_calls == []


def test_answer_error_says_what_each_status_means() -> None:
    """2xx: none; 408, 425, 429, 5xx: transient, not maybe delivered (the server answered),
    with Retry-After; other 3xx/4xx: permanent; a redirect names its Location."""
    assert answer_error(200, "OK", {}) is None
    assert answer_error(204, "No Content", {"Retry-After": "5"}) is None
    for status in (408, 425, 429, 500, 502, 503, 504, 599):
        error = answer_error(status, "x", {"Retry-After": "7"})
        assert isinstance(error, TransientError), status
        assert (error.status, error.retry_after, error.maybe_delivered) == (status, 7.0, False)
    for status in (301, 304, 400, 401, 403, 404, 409, 413, 418, 451):
        error = answer_error(status, "x", {"Location": "http://moved.test/"})
        assert isinstance(error, PermanentError), status
        assert error.status == status and not error.maybe_delivered
        assert ("redirect to http://moved.test/" in error.reason) == (status < 400)
    assert classify(503, "", None).reason == "503"  # type: ignore[union-attr]


# -- strikes: a row fails only while the endpoint works -----------------------------------------


def test_a_row_answered_500_while_others_succeed_fails_after_max_attempts() -> None:
    """The server's own answer about this request: each 500 is a strike once another request
    succeeded since the row's first attempt; after max_attempts (3) the row fails."""
    bad = FIRST + 9  # others were acknowledged before its first attempt
    run = send(per_row({bad: [Status(500)]}), 30, max_attempts=3)
    assert [c.result for c in run.calls_of(bad)] == ["500"] * 3
    assert run.tracker.failures == [expected_failure(bad, 3, 500, "500 Internal Server Error")]
    assert run.outcome.sent == 29 and run.outcome.retries == 2


@pytest.mark.parametrize("outage", [Refused(), Status(503), Status(502)])
def test_an_outage_answer_strikes_only_when_a_request_succeeds_meanwhile(outage: Step) -> None:
    """Refused, 502, 503 look like an outage: they count only when another request succeeded
    during this very attempt. Row a fails 10 times after the others are done: no strike, it
    arrives at the 11th attempt. Row b's attempts (1 s each) overlap the others' successes:
    it fails after max_attempts (3)."""
    a, b = FIRST + 5, FIRST + 6
    slow = dataclasses.replace(outage, after=1.0)  # type: ignore[type-var]
    quick = per_row({a: [outage] * 10 + [Ok()]})
    run = send(quick, 10, max_attempts=3)
    assert len(run.calls_of(a)) == 11 and run.tracker.failures == []
    assert run.outcome.sent == 10

    busy = per_row({b: [slow]}, default=Ok(after=0.05))
    run = send(busy, 800, max_attempts=3)  # the others take 10 s, b's three attempts < 5 s
    assert len(run.calls_of(b)) == 3
    assert [f.position for f in run.tracker.failures] == [b]
    assert run.tracker.failures[0].attempts == 3
    assert run.outcome.sent == 799


@pytest.mark.parametrize("answer", [Refused(), Status(503, after=0.0), Status(500, after=0.0)])
def test_an_outage_fails_nothing_and_gives_up_after_give_up_after(answer: Step) -> None:
    """Every request refused (or 503, or 500 for everything): no strike, no failure; after 300
    s of virtual silence the watchdog stops the run, "gave-up", every row pending and none
    ambiguous (no request may have arrived). Rows still queued count as pending too."""
    run = send(always(answer), 20, batch=5, concurrency=4, give_up_after=300.0)
    assert run.outcome.stopped == "gave-up"
    assert 300.0 < run.took < 300.5
    assert run.tracker.failures == [] and run.tracker.done == []
    assert run.tracker.pending == positions(0, 20) and run.tracker.ambiguous == []
    assert run.outcome.retries > 20 * 10 and run.outcome.maybe_twice == 0
    assert all(c.result != "ok" for c in run.calls)


def test_the_watchdog_counts_silence_since_the_last_success() -> None:
    """Successes until t=50, then 503 for everything: the run gives up at 50 + 300 s, with the
    acknowledged rows kept and the rest pending. A run longer than give_up_after whose
    successes come every 60 s (360 s in all, give_up_after 100 s) never gives up."""
    down = Status(503, retry_after="60", after=0.0)
    script: Script = lambda p, attempt, now: Ok(after=1.0) if now < 49.5 else down  # noqa: E731
    run = send(script, 1000, give_up_after=300.0, concurrency=4)
    assert run.outcome.stopped == "gave-up"
    assert run.outcome.sent == 200  # 4 at a time, 1 s each, for 50 s
    assert 350.0 < run.took < 351.5
    assert run.tracker.failures == [] and len(run.tracker.pending) == 800

    run = send(always(Ok(after=60.0)), 6, concurrency=1, give_up_after=100.0)
    assert run.outcome.stopped is None and run.outcome.sent == 6
    assert run.took == pytest.approx(360.0)


# -- timeouts: maybe delivered ------------------------------------------------------------------


def test_timeouts_park_a_row_after_max_attempts_and_bound_duplicates() -> None:
    """A timed-out request may have arrived: each retry of one adds to maybe_twice; after
    max_attempts (3) of them the row is parked: pending, ambiguous, not failed. A row timing
    out once then answered is sent (one maybe-twice)."""
    parked, recovered = FIRST + 4, FIRST + 8
    script = per_row({parked: [TimedOut()], recovered: [TimedOut(), Ok()]})
    run = send(script, 12, max_attempts=3)
    assert [c.result for c in run.calls_of(parked)] == ["timeout"] * 3
    assert [c.result for c in run.calls_of(recovered)] == ["timeout", "ok"]
    assert run.outcome.stopped is None  # finished: parking is not a stop
    assert run.outcome.parked == 1 and run.outcome.maybe_twice == 2 + 1
    assert run.tracker.unsent_calls == [([parked], [parked])]
    assert run.tracker.failures == [] and run.outcome.sent == 11


# -- stopping ---------------------------------------------------------------------------------


def test_a_graceful_stop_lets_requests_in_flight_finish() -> None:
    """A graceful stop ("interrupted") at t=1: no new request; the four in flight (5 s each)
    are acknowledged at t=5, within drain_timeout; the rest (current Work, queued Work, Work
    offered after the stop) is pending, none ambiguous."""
    run = send(always(Ok(after=5.0)), 40, stops=((1.0, "interrupted"),), drain_timeout=30.0)
    assert [c.start for c in run.calls] == [0.0] * 4
    assert sorted(run.tracker.done) == positions(0, 4)
    assert run.took == pytest.approx(5.0, abs=1e-6)
    assert run.outcome.stopped == "interrupted"
    assert run.tracker.pending == positions(4, 36) and run.tracker.ambiguous == []


def test_a_graceful_stop_with_a_retry_due_waits_without_spinning() -> None:
    """Row a's 503 asks for a retry at t=1.02, after the stop at t=0.5: no retry is taken while
    the two others (5 s answers) drain, and the idle workers wait rather than spin on the due
    retry (on a real loop: a CPU at 100% until the drain ends; the virtual clock fails a busy
    loop). Row a is pending, not ambiguous: its one request was answered."""
    a = FIRST
    script = per_row({a: [Status(503, retry_after="1"), Ok()]}, default=Ok(after=5.0))
    run = send(script, 3, concurrency=4, stops=((0.5, "interrupted"),))
    assert run.took == pytest.approx(5.0, abs=1e-6)
    assert len(run.calls_of(a)) == 1
    assert sorted(run.tracker.done) == positions(1, 2)
    assert run.tracker.pending == [a] and run.tracker.ambiguous == []


def test_a_graceful_stop_cuts_off_what_outlasts_drain_timeout() -> None:
    """Requests that never answer are cut off drain_timeout (10 s) after the stop; they may
    have arrived, so the tracker hears them as ambiguous."""
    run = send(always(Hang()), 20, stops=((1.0, "interrupted"),), drain_timeout=10.0)
    assert 10.99 < run.took < 11.25
    assert [c.result for c in run.calls] == ["cancelled"] * 4
    assert run.outcome.stopped == "interrupted"
    assert run.tracker.ambiguous == positions(0, 4) and run.tracker.pending == positions(0, 20)


@pytest.mark.parametrize(
    "stops", [((1.0, "aborted"),), ((0.5, "interrupted"), (1.0, "aborted"))], ids=["abort", "2nd"]
)
def test_an_abort_cuts_off_requests_in_flight_at_once(stops: tuple[tuple[float, str], ...]) -> None:
    """An abort ("aborted", or a second stop after a graceful one) waits neither for the 5 s
    answers nor drain_timeout: the four in flight are cut off, pending as ambiguous."""
    run = send(always(Ok(after=5.0)), 20, stops=stops, drain_timeout=30.0)
    assert 0.99 < run.took < 1.2
    assert run.outcome.stopped == "aborted"
    assert run.tracker.done == []
    assert run.tracker.ambiguous == positions(0, 4) and run.tracker.pending == positions(0, 20)


def test_settle_counts_retrying_and_cut_off_rows() -> None:
    """At an abort: rows waiting for a retry are pending and definite (refused: never
    arrived); the two cut off mid-request are pending and ambiguous."""
    hanging = positions(1, 2)
    script = per_row({p: [Hang()] for p in hanging}, default=Refused())
    run = send(script, 30, batch=5, concurrency=3, stops=((10.0, "aborted"),))
    assert run.outcome.stopped == "aborted"
    assert run.outcome.pending == 30 and run.outcome.unknown == 2
    assert run.tracker.ambiguous == hanging and run.tracker.pending == positions(0, 30)
    assert run.outcome.retries > 28


def test_the_retry_heap_limit_holds_new_rows_back() -> None:
    """With 64 rows waiting for a retry (the limit at concurrency 2) no new row is taken:
    during a 30 s outage 64 distinct rows are tried (and at most the 2 that were in flight
    as the limit was reached); afterwards all 200 arrive."""
    script: Script = lambda p, attempt, now: Refused() if now < 30 else Ok()  # noqa: E731
    run = send(script, 200, concurrency=2, backoff_base=1.0, backoff_cap=5.0)
    assert 64 <= len({c.position for c in run.calls if c.start < 30}) <= 64 + 2
    assert run.outcome.sent == 200 and run.tracker.failures == []


def test_rate_paces_requests_on_the_loop_clock() -> None:
    """--rate 10: one request at once, then one per 0.1 s: 50 requests span 4.9 s."""
    run = send(always(Ok(after=0.0)), 50, concurrency=8, rate=10.0)
    starts = sorted(c.start for c in run.calls)
    assert starts[0] == pytest.approx(0.0, abs=1e-6)
    assert starts[-1] == pytest.approx(4.9, abs=0.05)
    assert all(b - a > 0.09 for a, b in itertools.pairwise(starts))


def test_rate_holds_in_every_second_the_first_included() -> None:
    """--rate 200 means at most 200 requests in any second, not 400 in the first (a
    bucket that starts full): at most a tenth of a second's worth comes early."""
    run = send(always(Ok(after=0.001)), 1_000, batch=100, concurrency=32, rate=200.0)
    starts = sorted(c.start for c in run.calls)
    busiest = max(
        sum(1 for t in starts[i:] if t < start + 1.0) for i, start in enumerate(starts[:400])
    )
    assert busiest <= 200 + 20
    assert starts[-1] == pytest.approx((1_000 - 20) / 200, abs=0.1)


# -- a run: deliver() wiring --------------------------------------------------------------------


def test_deliver_commits_as_rows_settle_and_fills_the_report() -> None:
    """Through importer.run.deliver: acknowledgements reach the ledger in batches every tick,
    the ledger is flushed every flush_seconds (1 s) of the run and once at the end with every
    row settled; the report gets the counts, the failure and the sent rows' totals."""
    bad = FIRST + 17
    script = per_row({bad: [Status(404)]}, default=Ok(after=0.5))
    transport = ScriptedTransport(script)
    made: list[SendOptions] = []

    def scripted(options: SendOptions) -> Any:
        made.append(options)
        return driven(transport, options.concurrency)

    tracker = FakeTracker()
    report = Report(command="send")
    options = SendOptions(concurrency=4, drain_timeout=30.0)
    settings = run_module.RunSettings(options=options, flush_seconds=1.0, transport=scripted)
    rows = works(40)

    async def feed(sender: Sender, _ledger_thread: Any) -> None:
        for w in rows:
            await sender.put(w)
        await sender.feed_done()

    async def main() -> tuple[Outcome, float]:
        loop = asyncio.get_running_loop()
        started = transport.t0 = loop.time()
        outcome = await run_module.deliver(feed, tracker, report, settings, total=40)
        return outcome, loop.time() - started

    outcome, took = run_virtual(main())
    assert 4.99 < took < 5.2  # 39 rows of 0.5 s, 4 at a time (the 404 is quick)
    assert sorted(tracker.done) == [p for p in positions(0, 40) if p != bad]
    assert tracker.done_calls > 5  # handed over every tick, not only at the end
    assert 5 <= len(tracker.flushed) <= 7  # every second of the run, then the last one
    assert tracker.flushed[0] < 39 and tracker.flushed[-1] == 39
    assert tracker.failures == [expected_failure(bad, 1, 404, "404 Not Found")]
    assert tracker.unsent_calls == []
    assert (report.sent, report.failed, report.pending) == (39, 1, 0)
    assert report.stats.count == 39 and report.stats.per_event["purchase"] == 19
    assert list(report.failures["row"]) == [bad - FIRST + 1]
    assert any("1 rows failed permanently" in note for note in report.notes)
    assert outcome.sent == 39 and outcome.stopped is None
    assert made == [options]  # one transport per delivery, of the run's options


# -- the production transport, against a real local server ------------------------------------


def test_aiohttp_transport_against_a_local_server() -> None:
    """AiohttpTransport: 2xx returns; a redirect is not followed and names its Location; 503
    is transient with its Retry-After; 404 permanent; a refused connection is transient and
    never arrived; a too-slow answer is transient and may have arrived. A Sender built without
    a transport uses it, with the User-Agent."""
    seen: list[tuple[str, str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, request.headers.get("User-Agent", "")))
        if request.path == "/redirect":
            raise web.HTTPFound("http://127.0.0.1:9/elsewhere")
        if request.path == "/busy":
            return web.Response(status=503, headers={"Retry-After": "7"})
        if request.path == "/missing":
            return web.Response(status=404)
        if request.path == "/slow":
            await asyncio.sleep(0.3)  # the server finishes it before cleanup: keep it short
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
        closed.close()
        options = SendOptions(concurrency=4, total_timeout=0.1)
        try:
            async with AiohttpTransport(options) as transport:
                await transport.get(URL(f"{base}/ok"))
                with pytest.raises(PermanentError) as redirect:
                    await transport.get(URL(f"{base}/redirect"))
                assert redirect.value.status == 302
                assert "redirect to http://127.0.0.1:9/elsewhere not followed" in str(
                    redirect.value
                )
                with pytest.raises(TransientError) as busy:
                    await transport.get(URL(f"{base}/busy"))
                assert (busy.value.status, busy.value.retry_after) == (503, 7.0)
                assert not busy.value.maybe_delivered
                with pytest.raises(PermanentError) as missing:
                    await transport.get(URL(f"{base}/missing"))
                assert missing.value.status == 404
                with pytest.raises(TransientError) as refused:
                    await transport.get(URL(f"http://127.0.0.1:{closed_port}/event"))
                assert refused.value.status is None and not refused.value.maybe_delivered
                started = time.monotonic()
                with pytest.raises(TransientError) as slow:
                    await transport.get(URL(f"{base}/slow"))
                assert slow.value.maybe_delivered and time.monotonic() - started < 0.25
            sender = Sender(options, tracker=(tracker := FakeTracker()))
            assert isinstance(sender.transport, AiohttpTransport)
            rows = works(10)
            for w in rows:
                w.urls = [URL(f"{base}/event?row={p}", encoded=True) for p in w.positions]
                await sender.put(w)
            await sender.feed_done()
            outcome = await sender.run()
            sender.settle()
            assert outcome.sent == 10 and sorted(tracker.done) == positions(0, 10)
        finally:
            await runner.cleanup()

    asyncio.run(main())
    paths = [path for path, _ in seen]
    assert paths == ["/ok", "/redirect", "/busy", "/missing", "/slow"] + ["/event"] * 10
    assert {agent for _, agent in seen} == {f"event-backfill/{__version__}"}


def test_a_connection_closed_under_a_request_is_resent_only_by_the_sender() -> None:
    """A server that reads a request and then closes the kept-alive connection: every copy
    that arrives beyond the first is one the sender counted (maybe_twice), none slips past."""
    arrivals: Counter[str] = Counter()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        try:
            while line := await reader.readline():
                target = line.split()[1].decode()
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                arrivals[target] += 1
                served += 1
                if served == 2:  # the second request on a connection: no answer, closed
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        finally:
            writer.close()

    async def main() -> Any:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            rows = [
                {
                    "user": f"u{i}",
                    "event": "buy",
                    "exp": "87654321",
                    "var": "1111111",
                    "ts": 1462472175 + i,
                }
                for i in range(60)
            ]
            schema = {
                "project_id": {"value": "1234567"},
                "account_id": {"value": "8511325"},
                "user_id": {"column": "user"},
                "event_name": {"column": "event"},
                "experiments": [{"experiment_column": "exp", "variation_column": "var"}],
                "time": {"column": "ts"},
            }
            return await importer.send_async(
                pa.Table.from_pylist(rows),
                schema=schema,
                endpoint=f"http://127.0.0.1:{port}/event",
                ledger=None,
                concurrency=4,
                max_attempts=50,  # a row cut off again and again is parked: not the point here
                backoff_base=0.01,
                backoff_cap=0.02,
                now=1_500_000_000,
            )

    report = asyncio.run(main())
    assert report.sent == 60 and len(arrivals) == 60, report
    extra = sum(arrivals.values()) - len(arrivals)
    assert extra > 0  # the server did cut requests off
    assert extra <= report.maybe_twice
