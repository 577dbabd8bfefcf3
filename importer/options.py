"""Every option's default, and the option types, in one light module.

The CLI builds its help from these without importing pyarrow, pandas or aiohttp, so
``event-backfill --help`` and ``--version`` start at once. The modules that use them
(sender, ledger, collector) import them from here.
"""

from __future__ import annotations

import enum
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

DEFAULT_HOST = "127.0.0.1"  # the collector listens on loopback unless told otherwise
DEFAULT_PORT = 8765

DEFAULT_CONCURRENCY = 32
DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_TOTAL_TIMEOUT = 30.0
DEFAULT_BACKOFF_BASE = 0.5
DEFAULT_BACKOFF_CAP = 30.0
DEFAULT_MAX_RETRY_AFTER = 120.0
DEFAULT_GIVE_UP_AFTER = 300.0
DEFAULT_DRAIN_TIMEOUT = 30.0
DEFAULT_TRANSPORT = "aiohttp"
TRANSPORTS = ("aiohttp", "curl")


@dataclass(frozen=True)
class SendOptions:
    """How to send. Every field has a DEFAULT_* constant.

    Attributes:
        concurrency: requests in flight at once.
        rate: at most this many requests per second (None: as fast as the pool allows).
        connect_timeout: seconds to open a connection.
        total_timeout: seconds for a whole request.
        max_attempts: attempts per row before it fails (while the endpoint works).
        backoff_base: first retry delay bound, doubled per attempt (full jitter).
        backoff_cap: the largest retry delay.
        max_retry_after: the longest Retry-After honoured.
        give_up_after: stop when nothing succeeded for this many seconds.
        drain_timeout: on a graceful stop, how long in-flight requests may finish.
        transport: the HTTP client: "aiohttp" (the default) or "curl" (libcurl's multi
            interface in its own thread, ~4x the events per core; the ``curl`` extra).
        http2: HTTP/2 over TLS where the server offers it, requests multiplexed over few
            connections (curl only).
        workers: sender processes (each with ``concurrency`` connections); 1 sends from the
            process that reads, as always.
        dask: a Dask scheduler's address (tcp://host:8786): send from one actor on each of
            its workers (the ``dask`` extra), instead of from this machine.
    """

    concurrency: int = DEFAULT_CONCURRENCY
    rate: float | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_cap: float = DEFAULT_BACKOFF_CAP
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER
    give_up_after: float = DEFAULT_GIVE_UP_AFTER
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    transport: str = DEFAULT_TRANSPORT
    http2: bool = False
    workers: int = 1
    dask: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.dask is not None and self.workers > 1:
            raise ValueError(
                "dask and workers do not go together: with --dask, each Dask worker runs one "
                "sender; leave --workers out"
            )
        if self.dask is not None and importlib.util.find_spec("distributed") is None:
            raise ValueError(
                "--dask needs distributed, which is not installed: "
                "pip install 'event-backfill[dask]'"
            )
        if self.transport not in TRANSPORTS:
            raise ValueError(
                f"transport must be one of {', '.join(TRANSPORTS)}, got {self.transport!r}"
            )
        if self.http2 and self.transport != "curl":
            raise ValueError("http2 needs the curl transport (--transport curl)")
        if self.transport == "curl" and importlib.util.find_spec("pycurl") is None:
            raise ValueError(
                "the curl transport needs pycurl, which is not installed: "
                "pip install 'event-backfill[curl]'"
            )


LEDGER_ENV = "EVENT_BACKFILL_LEDGER"


class _Default(enum.Enum):
    LEDGER = "the default ledger"


# The ledger a run uses unless told otherwise: $EVENT_BACKFILL_LEDGER, else ledger.sqlite in
# the user's data directory. Never relative to the working directory: the same command run
# from another directory must find the same ledger (and never send a file twice).
DEFAULT_LEDGER: Final = _Default.LEDGER
LedgerPath = str | Path | Literal[_Default.LEDGER]


def default_ledger() -> Path:
    """Where the ledger lives when no --ledger is given."""
    configured = os.environ.get(LEDGER_ENV)
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return platformdirs.user_data_path("event-backfill", appauthor=False) / "ledger.sqlite"


def ledger_path(path: LedgerPath | None) -> Path:
    """A ledger argument as a path (the default one for DEFAULT_LEDGER or None)."""
    if path is None or path is DEFAULT_LEDGER:
        return default_ledger()
    assert not isinstance(path, _Default)
    return Path(path).expanduser()
