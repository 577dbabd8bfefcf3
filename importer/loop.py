"""The event loop a run's own thread or process uses: uvloop's when it is installed.

uvloop (the ``fast`` extra, Linux and macOS) runs the loop and its sockets in C. It is used
only for loops this package creates (``send`` and ``retry`` run in a thread of their own, and
each ``--workers`` process in its own loop), never for a loop it is handed: ``send_async``
runs on the caller's loop, and a notebook kernel's is left as it is.
``EVENT_BACKFILL_LOOP=asyncio`` turns it off (to compare, or to rule it out).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
LOOP_ENV = "EVENT_BACKFILL_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's ``new_event_loop`` when installed and not turned off, else None (asyncio's)."""
    if os.environ.get(LOOP_ENV, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on a new loop from :func:`loop_factory`."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
