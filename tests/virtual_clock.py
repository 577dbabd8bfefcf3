"""A virtual-time event loop for tests: sleeps and timeouts pass at once, in their order.

Like ``aiotools.VirtualClock``: the loop's ``time()`` is a counter, and when the loop would
block in ``select(timeout)`` until its next timer, the counter jumps to that timer instead.
So ``asyncio.sleep``, ``wait_for`` and ``call_later`` (everything that reads ``loop.time()``)
keep their order and their arithmetic, while minutes of them take milliseconds.

Real I/O still works (it is polled without waiting). Work handed to threads
(``run_in_executor``, ``to_thread``) takes no virtual time: while any is out, the clock stands
still and the loop waits for it for real. A loop with nothing scheduled, no thread out and no
I/O ready would wait forever: after ``STUCK_AFTER`` real seconds it raises instead. A busy
loop (callbacks that keep the loop running without ever letting it wait, so time never
passes) raises after ``SPIN_LIMIT`` iterations at one instant or ``REAL_LIMIT`` real seconds:
on a real clock it would burn a CPU, here it would hang.
"""

from __future__ import annotations

import asyncio
import math
import selectors
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")

START = 1_000.0  # not 0: code must not take a time of 0 for "unset"
STUCK_AFTER = 5.0
SPIN_LIMIT = 100_000  # loop iterations at one instant: a busy loop, not a burst of work
REAL_LIMIT = 30.0
_THREAD_WAIT = 0.5  # real seconds per select while a thread is out (then look again)


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        loop = self.loop
        assert loop is not None
        loop.check_progress()
        if loop.threads_out:  # the clock stands still until the thread is back
            wait = _THREAD_WAIT if timeout is None else min(timeout, _THREAD_WAIT)
            return super().select(wait)
        if timeout is None:
            events = super().select(STUCK_AFTER)
            if not events:
                raise RuntimeError(
                    "virtual clock: nothing is scheduled, no thread is out and no I/O came: "
                    "the loop would wait forever"
                )
            return events
        events = super().select(0)
        if not events:
            loop.to_next_timer()
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose clock only moves when it would otherwise wait."""

    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = START
        self._real_deadline = time.monotonic() + REAL_LIMIT
        self._instant, self._spins = START, 0.0
        self.threads_out = 0

    def time(self) -> float:
        return self._virtual_now

    def check_progress(self) -> None:
        """Fail a loop that spins at one instant or runs too long for real."""
        if self._virtual_now != self._instant:
            self._instant, self._spins = self._virtual_now, 0
        self._spins += 1
        problem = ""
        if self._spins > SPIN_LIMIT:
            problem = f"{SPIN_LIMIT:,} loop iterations at one instant: a busy loop"
        elif time.monotonic() > self._real_deadline:
            problem = f"still running after {REAL_LIMIT} s of real time"
        if problem:
            self._spins, self._real_deadline = -math.inf, math.inf  # let the runner clean up
            raise RuntimeError(f"virtual clock: {problem}")

    def to_next_timer(self) -> None:
        """Move the clock to the next timer, and when the loop is idle always forward.

        Called just before the loop runs its due timers. A timer the loop would run early
        (within its clock resolution) moves the clock to its time, so code that wakes then
        sees its moment come. With nothing ready the clock moves exactly to the next timer,
        or one float step when that is due already: code that reschedules itself "a hair
        later" (a float residue) sees time pass, as on a real clock, instead of spinning.
        """
        if not self._scheduled:
            return
        when = self._scheduled[0].when()
        if not (self._ready or self._stopping):
            self._virtual_now = max(when, math.nextafter(self._virtual_now, math.inf))
        elif self._virtual_now < when < self._virtual_now + self._clock_resolution:
            self._virtual_now = when

    def run_in_executor(
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self.threads_out += 1
        future.add_done_callback(self._thread_back)
        return future

    def _thread_back(self, _: asyncio.Future[Any]) -> None:
        self.threads_out -= 1


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a fresh virtual-time loop."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)
