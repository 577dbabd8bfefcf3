"""A per-request transport behind the batch shape, to drive the sender's pump in tests.

:class:`Batched` takes requests as :class:`importer.transport.BatchTransport` does and runs
each through a per-request transport's ``get`` in a task. Like the curl transport, it reports
outcomes in batches, not one by one: those that finish in one turn of the loop go together,
a turn later. So the rule tests run unchanged through either driver of the sender.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from yarl import URL

from importer.errors import DeliveryError
from importer.transport import Outcomes, Transport


class Batched:
    """``inner.get`` per request; outcomes batched per loop turn; ``cancel`` cuts tasks off."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.batches: list[int] = []  # how many outcomes each report carried
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready: list[tuple[Callable[[Outcomes], None], Any, DeliveryError | None]] = []

    async def __aenter__(self) -> Batched:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert not self._tasks, "requests still out after the run"
        await self.inner.__aexit__(None, None, None)

    def send(self, requests: list[tuple[URL, Any]], done: Callable[[Outcomes], None]) -> None:
        for url, token in requests:
            task = asyncio.create_task(self._one(url, token, done))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

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
            self.batches.append(len(ready))
            ready[0][0]([(token, err) for _, token, err in ready])

    async def cancel(self) -> None:
        self._flush()  # what finished before the cut-off is reported first
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._flush()  # none should have finished since; if one did, it is reported now
