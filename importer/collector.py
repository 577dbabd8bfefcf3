"""A local receiver of the Event API, for rehearsals, tests and benchmarks.

``GET /event`` on any Host header: each request is checked against the spec with the same
rule codes as ``check``, answered 200 like the real API (unless a fault is injected), and
recorded (receive time, raw query, status) to NDJSON or SQLite. ``GET /stats`` reports what
arrived. Faults: 500/503 answers, 429 with Retry-After (seconds or an HTTP date), added
latency, connection resets, hangs longer than a client's timeout, and 400 answers for
queries matching a pattern or during a window of time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import signal
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl

from aiohttp import web

from importer.errors import UsageError
from importer.options import DEFAULT_HOST

STATUS_RESET = 0
STATUS_HANG = -1

_DIGITS = re.compile(r"[0-9]+")
_VARIATION = re.compile(r"[0-9]+(_[0-9]+)*")
_GOALS = re.compile(r"[0-9]+(,[0-9]+)*")
_INTEGER = re.compile(r"-?[0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Faults:
    """Faults to inject, each a share of requests (0 to 1) unless said otherwise.

    Attributes:
        error_rate: answer 500 or 503.
        throttle_rate: answer 429 with Retry-After.
        retry_after: the Retry-After the 429s carry, in seconds.
        retry_after_date: send Retry-After as an HTTP date instead of seconds.
        latency: seconds added before every answer.
        reset_rate: reset the connection without answering.
        hang_rate: answer nothing for ``hang_seconds`` (longer than a client's timeout).
        hang_seconds: how long a hang lasts.
        bad_request_match: answer 400 to queries matching this regular expression.
        bad_request_window: answer 400 to every request between these seconds after the first
            request arrived.
        seed: seed for the random choices, for repeatable runs.
    """

    error_rate: float = 0.0
    throttle_rate: float = 0.0
    retry_after: float = 1.0
    retry_after_date: bool = False
    latency: float = 0.0
    reset_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 60.0
    bad_request_match: str | None = None
    bad_request_window: tuple[float, float] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        rates = (self.error_rate, self.throttle_rate, self.reset_rate, self.hang_rate)
        if any(r < 0 or r > 1 for r in rates) or sum(rates) > 1:
            raise UsageError("fault rates must be between 0 and 1 and add up to at most 1")


def check_query(pairs: list[tuple[str, str]]) -> list[str]:
    """The rule codes a decoded query breaks (the same codes as ``check``); [] when valid."""
    seen: Counter[str] = Counter(name for name, _ in pairs)
    params = dict(pairs)
    problems: list[str] = []
    if any(n > 1 for n in seen.values()):
        problems.append("duplicate-parameter")
    for name, rule in (("a", "project-id-digits"), ("d", "account-id-digits")):
        if not _DIGITS.fullmatch(params.get(name, "")):
            problems.append(rule)
    user, event = params.get("u", ""), params.get("n", "")
    problems += (
        ["user-id-empty"] if not user else (["user-id-control"] if _CONTROL.search(user) else [])
    )
    problems += (
        ["event-name-empty"]
        if not event
        else (["event-name-control"] if _CONTROL.search(event) else [])
    )
    experiments = [(k[1:], v) for k, v in pairs if k.startswith("x")]
    if not experiments:
        problems.append("experiment-missing")
    for experiment, variation in experiments:
        if not _DIGITS.fullmatch(experiment):
            problems.append("experiment-id-digits")
        if not _VARIATION.fullmatch(variation):
            problems.append("variation-id-format")
    if "g" in params and not _GOALS.fullmatch(params["g"]):
        problems.append("goal-ids-format")
    if "v" in params and not _INTEGER.fullmatch(params["v"]):
        problems.append("value-format")
    if "time" in params and not _INTEGER.fullmatch(params["time"]):
        problems.append("time-format")
    for name, _ in pairs:
        known = name in ("a", "d", "u", "n", "g", "v", "time") or name[:1] in ("x", "s")
        if not known or (name[:1] == "s" and not _DIGITS.fullmatch(name[1:])):
            problems.append("unknown-parameter")
    return problems


@dataclass
class Stats:
    """Counts of what the collector received."""

    received: int = 0
    accepted: int = 0
    invalid: int = 0
    duplicates: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    value_total: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts."""
        return {
            "received": self.received,
            "accepted": self.accepted,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "value_total": self.value_total,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "rules": dict(self.rules),
        }


class Recorder:
    """Appends one record per request to NDJSON or SQLite (chosen by the file's suffix)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._file: IO[str] | None = None
        self._db: sqlite3.Connection | None = None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.suffix.lower() in (".sqlite", ".db", ".sqlite3"):
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS requests (t REAL, host TEXT, query TEXT, "
                "status INTEGER, retry_not_before REAL, problems TEXT)"
            )
        else:
            self._file = self.path.open("a", encoding="utf-8", buffering=1)

    def write(self, record: dict[str, Any]) -> None:
        """Record one request; each is on disk when this returns (line-buffered or autocommit)."""
        if self._file is not None:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        elif self._db is not None:
            self._db.execute(
                "INSERT INTO requests VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record["t"],
                    record["host"],
                    record["query"],
                    record["status"],
                    record.get("retry_not_before"),
                    ",".join(record.get("problems", [])),
                ),
            )

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
        if self._db is not None:
            self._db.close()


class Collector:
    """The Event API receiver as an aiohttp application.

    Args:
        record: an .ndjson or .sqlite file to record every request to (None: keep counts only).
        faults: faults to inject.
        keep: also keep every record in memory (``records``), for tests and the sandbox.
    """

    def __init__(
        self, *, record: str | Path | None = None, faults: Faults | None = None, keep: bool = False
    ) -> None:
        self.faults = faults or Faults()
        self.recorder = Recorder(record)
        self.keep = keep
        self.records: list[dict[str, Any]] = []
        self.stats = Stats()
        self._seen: set[str] = set()
        self._random = random.Random(self.faults.seed)
        self._pattern = (
            re.compile(self.faults.bad_request_match) if self.faults.bad_request_match else None
        )
        self.started = time.time()
        self.first_request: float | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_get("/event", self._event)
        app.router.add_get("/stats", self._stats)
        return app

    async def start(self, host: str = DEFAULT_HOST, port: int = 0) -> str:
        """Listen on host:port (0 picks a free port); returns the endpoint URL."""
        self._runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise UsageError(
                f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port"
            ) from exc
        server: Any = site._server  # aiohttp keeps the bound asyncio.Server here
        bound = server.sockets[0].getsockname()[1]
        self.started = time.time()
        self.url = f"http://{host}:{bound}/event"
        return self.url

    async def stop(self) -> None:
        """Stop listening and close the record file."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.recorder.close()

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.to_dict())

    async def _event(self, request: web.Request) -> web.StreamResponse:
        received = time.time()
        query = request.query_string
        record: dict[str, Any] = {"t": received, "host": request.host, "query": query}
        fault = self._fault(query, received)
        if fault == "reset":
            self._record(record, STATUS_RESET)
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if fault == "hang":
            self._record(record, STATUS_HANG)
            await asyncio.sleep(self.faults.hang_seconds)
            return web.Response(status=504)
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        if fault == "throttle":
            return self._throttle(record, received)
        if fault in ("500", "503", "400"):
            self._record(record, int(fault))
            return web.Response(status=int(fault), text=f"injected {fault}\n")
        self._accept(record, query)
        return web.Response(status=200)

    def _fault(self, query: str, now: float) -> str | None:
        window = self.faults.bad_request_window
        if self.first_request is None:
            self.first_request = now
        if window is not None and window[0] <= now - self.first_request < window[1]:
            return "400"
        if self._pattern is not None and self._pattern.search(query):
            return "400"
        roll = self._random.random()
        for name, rate in (
            ("500" if self._random.random() < 0.5 else "503", self.faults.error_rate),
            ("throttle", self.faults.throttle_rate),
            ("reset", self.faults.reset_rate),
            ("hang", self.faults.hang_rate),
        ):
            if roll < rate:
                return name
            roll -= rate
        return None

    def _throttle(self, record: dict[str, Any], received: float) -> web.Response:
        wait = self.faults.retry_after
        if self.faults.retry_after_date:
            not_before = float(math.ceil(received + wait))
            header = formatdate(not_before, usegmt=True)
        else:
            not_before = received + wait
            header = f"{wait:g}"
        record["retry_not_before"] = not_before
        self._record(record, 429)
        return web.Response(status=429, headers={"Retry-After": header}, text="slow down\n")

    def _accept(self, record: dict[str, Any], query: str) -> None:
        pairs = parse_qsl(query, keep_blank_values=True)
        problems = check_query(pairs)
        if problems:
            record["problems"] = problems
            self.stats.invalid += 1
            self.stats.rules.update(problems)
        if query in self._seen:
            self.stats.duplicates += 1
        else:
            self._seen.add(query)
        self.stats.accepted += 1
        value = dict(pairs).get("v", "")
        if _INTEGER.fullmatch(value):
            self.stats.value_total += int(value)
        self._record(record, 200)

    def _record(self, record: dict[str, Any], status: int) -> None:
        record["status"] = status
        self.stats.received += 1
        self.stats.by_status[status] += 1
        self.recorder.write(record)
        if self.keep:
            self.records.append(record)


class RunningCollector:
    """A collector serving from its own thread: for notebooks, tests and ``--sandbox``.

    Use as a context manager, or call :meth:`stop`::

        with RunningCollector() as collector:
            importer.send(df, schema=..., endpoint=collector.url)
            collector.stats.accepted
    """

    def __init__(
        self,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        record: str | Path | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.collector = Collector(record=record, faults=faults, keep=True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="collector", daemon=True
        )
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self.collector.start(host, port), self._loop)
        try:
            self.url = future.result(timeout=30)
        except BaseException:
            self._close_loop()
            raise

    @property
    def stats(self) -> Stats:
        """What arrived so far."""
        return self.collector.stats

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every request so far: t, host, query, status (and problems, retry_not_before)."""
        return list(self.collector.records)

    def set_faults(self, faults: Faults) -> None:
        """Change the injected faults from now on (e.g. end an outage in a rehearsal)."""

        def swap() -> None:
            collector = self.collector
            collector.faults = faults
            collector._random = random.Random(faults.seed)
            pattern = faults.bad_request_match
            collector._pattern = re.compile(pattern) if pattern else None

        self._loop.call_soon_threadsafe(swap)

    def accepted_queries(self) -> list[str]:
        """The raw queries answered 200, in arrival order."""
        return [r["query"] for r in self.records if r["status"] == 200]

    def stop(self) -> None:
        """Stop serving and close the record file."""
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=30)
        self._close_loop()

    async def _shutdown(self) -> None:
        await self.collector.stop()
        # Handlers still hanging (injected hangs) are cancelled, not left for the GC.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> RunningCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def serve(
    host: str, port: int, *, record: str | Path | None, faults: Faults, announce: Any = print
) -> None:
    """Run a collector until cancelled or signalled (the ``event-backfill collector`` command).

    SIGINT and SIGTERM stop it gracefully: it stops listening and answers the requests it
    has already recorded before it exits, as a real server's graceful stop does.
    """
    collector = Collector(record=record, faults=faults)
    url = await collector.start(host, port)
    announce(f"collector listening on {url} (GET /stats for counts); Ctrl-C stops it")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await collector.stop()
