"""The rule tests' batch driver: :class:`importer.transport.Batched` (a per-request transport
behind the batch shape, as a ``--workers`` sender process runs aiohttp), with counters.

It holds what it is handed, runs at most ``concurrency`` at once (starting the next as one
ends), reports outcomes in batches, and at a drain or cut-off reports those it never started
as NOT_SENT, as the curl transport does. So the rule tests run unchanged through either
driver of the sender.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from yarl import URL

from importer.transport import Batched as _Batched
from importer.transport import Outcomes


class Batched(_Batched):
    """Counts what it was handed: ``most_held`` requests at once, at most."""

    most_held = 0
    _held = 0

    def send(self, requests: list[tuple[URL | str, Any]], done: Callable[[Outcomes], None]) -> None:
        self._held += len(requests)
        self.most_held = max(self.most_held, self._held)

        def counted(outcomes: Outcomes) -> None:
            self._held -= len(outcomes)
            done(outcomes)

        super().send(requests, counted)
