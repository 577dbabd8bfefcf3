"""A per-request transport behind the batch shape, to drive the sender's pump in tests.

:class:`Batched` takes requests as :class:`importer.transport.BatchTransport` does and runs
each through a per-request transport's ``get`` in a task. Like the curl transport, it holds
what it is handed, runs at most ``concurrency`` at once (starting the next as one ends),
reports outcomes in batches (those that finish in one turn of the loop go together, a turn
later), and at a cut-off reports those it never started as NOT_SENT. So the rule tests run
unchanged through either driver of the sender.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from yarl import URL

from importer.errors import DeliveryError
from importer.transport import NOT_SENT, Outcomes, Transport


class Batched:
    """``inner.get`` per request, ``concurrency`` at a time; outcomes batched per loop turn;
    ``cancel`` cuts tasks off and reports the requests never started as NOT_SENT."""

    def __init__(self, inner: Transport, concurrency: int) -> None:
        self.inner = inner
        self.concurrency = concurrency
        self.batches: list[int] = []  # how many outcomes each report carried
        self.most_held = 0  # requests handed over and not yet reported, at most
        self._held = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: deque[tuple[URL, Any, Callable[[Outcomes], None]]] = deque()
        self._ready: list[tuple[Callable[[Outcomes], None], Any, DeliveryError | None]] = []

    async def __aenter__(self) -> Batched:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert not self._tasks, "requests still out after the run"
        await self.inner.__aexit__(None, None, None)

    def send(self, requests: list[tuple[URL, Any]], done: Callable[[Outcomes], None]) -> None:
        for url, token in requests:
            self._waiting.append((url, token, done))
        self._held += len(requests)
        self.most_held = max(self.most_held, self._held)
        self._start()

    def _start(self) -> None:
        while self._waiting and len(self._tasks) < self.concurrency:
            url, token, done = self._waiting.popleft()
            task = asyncio.create_task(self._one(url, token, done))
            self._tasks.add(task)
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._start()  # the next one goes now, as libcurl's thread does

    async def _one(self, url: URL, token: Any, done: Callable[[Outcomes], None]) -> None:
        try:
            await self.inner.get(url)
        except DeliveryError as err:
            self._report(done, token, err)
        else:
            self._report(done, token, None)

    def _report(self, done: Callable[[Outcomes], None], token: Any, err: Any) -> None:
        if not self._ready:
            asyncio.get_running_loop().call_soon(self._flush)
        self._ready.append((done, token, err))

    def _flush(self) -> None:
        ready, self._ready = self._ready, []
        if ready:
            self._held -= len(ready)
            self.batches.append(len(ready))
            ready[0][0]([(token, err) for _, token, err in ready])

    def drain(self) -> None:
        waiting, self._waiting = self._waiting, deque()
        for _, token, done in waiting:
            self._report(done, token, NOT_SENT)

    async def cancel(self) -> None:
        self._flush()  # what finished before the cut-off is reported first
        waiting, self._waiting = self._waiting, deque()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, token, done in waiting:
            self._report(done, token, NOT_SENT)
        self._flush()  # the never-started ones (and any that finished meanwhile)
