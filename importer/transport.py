"""How requests go out: the sender's transport seam.

The sender decides what to send and when, and what each outcome means for its row (retry,
strike, fail, park, give up). A transport only sends, in one of two shapes:

* :class:`Transport`, per request: :meth:`Transport.get` sends one URL and returns when the
  answer is a 2xx, or raises the project's :class:`TransientError` or :class:`PermanentError`
  saying what went wrong. :class:`AiohttpTransport` (the default) is one; tests plug in
  scripted ones.
* :class:`BatchTransport`, for a client that runs outside the event loop:
  :meth:`BatchTransport.send` takes many requests at once and reports their outcomes later,
  in batches, as ``(token, None or the error)``. :class:`importer.curl.CurlTransport`
  (libcurl's multi interface in its own thread) is one.

Either way the outcome of an answer is :func:`answer_error`'s, so every transport classifies
statuses, redirects and Retry-After alike. aiohttp's exceptions are translated into the
project's tree in :func:`translate` only.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import aiohttp
from yarl import URL

from importer._version import __version__
from importer.errors import DeliveryError, PermanentError, TransientError
from importer.options import SendOptions
from importer.preflight import verifying_context

TRANSIENT_STATUSES = frozenset({408, 425, 429})
USER_AGENT = f"event-backfill/{__version__}"


class Transport(Protocol):
    """Sends one request per :meth:`get`; entered once per run (opens its connection pool).

    The sender calls ``get`` from up to ``options.concurrency`` tasks at once, and cancels
    calls in flight when a run is cut off: a cancelled ``get`` must just stop.
    """

    async def __aenter__(self) -> Self:
        """Open what requests need (a session, a connection pool)."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close it."""
        ...

    async def get(self, url: URL | str) -> None:
        """Send a GET to ``url`` as it is (never following a redirect; text is sent as
        written, not re-encoded).

        Returns on a 2xx. Raises :class:`TransientError` (worth retrying: no connection,
        timeouts, 408, 425, 429, 5xx; ``maybe_delivered`` says whether the request may have
        arrived) or :class:`PermanentError` (any other answer).
        """
        ...


Outcomes = list[tuple[Any, DeliveryError | None]]

# The outcome a batch transport gives, at a cut-off, for a request it never began to write
# (it was waiting for a connection): certainly not delivered, and not an attempt.
NOT_SENT = TransientError("cut off before it was sent", maybe_delivered=False)


@runtime_checkable
class BatchTransport(Protocol):
    """Sends many requests at once, outside the event loop, and reports back in batches.

    Entered once per run. The sender hands over up to ``window(concurrency)`` requests; at
    most ``options.concurrency`` are out (written or being written) at once, and the
    transport starts the next one itself as one ends, so it never waits for the event loop.
    """

    async def __aenter__(self) -> Self:
        """Start (a connection pool, a thread)."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop and close; nothing is reported after this."""
        ...

    def send(self, requests: list[tuple[URL | str, Any]], done: Callable[[Outcomes], None]) -> None:
        """Start a GET for each ``(url, token)``, ``url`` sent as it is, never redirected.

        Returns at once. Later, on the event loop's thread, ``done`` is called with
        ``(token, None)`` for a 2xx or ``(token, error)`` as :meth:`Transport.get` would
        raise it: once per request, several requests per call.
        """
        ...

    def drain(self) -> None:
        """Start nothing more (a graceful stop): requests not started yet come back as
        :data:`NOT_SENT`; those out finish and are reported as usual."""
        ...

    async def cancel(self) -> None:
        """Cut off every request still out. Outcomes that came before are reported first,
        then :data:`NOT_SENT` for each request that was never written; after this returns,
        ``done`` is never called for a request sent before it (those cut off mid-request
        may have arrived: the sender counts them so)."""
        ...


def window(concurrency: int) -> int:
    """Requests a batch transport holds: ``concurrency`` out and as many ready to start."""
    return 2 * concurrency


class Batched:
    """A per-request transport behind the batch shape: ``inner.get`` per request in a task,
    ``concurrency`` at a time (the next starts as one ends), outcomes reported in batches
    (those that end in one turn of the loop go together), NOT_SENT for those never started
    at a drain or cut-off. A sender process of ``--workers`` runs aiohttp this way; the rule
    tests drive the sender's pump with it."""

    def __init__(self, inner: Transport, concurrency: int) -> None:
        self.inner = inner
        self.concurrency = concurrency
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: deque[tuple[URL | str, Any, Callable[[Outcomes], None]]] = deque()
        self._ready: list[tuple[Callable[[Outcomes], None], Any, DeliveryError | None]] = []

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.inner.__aexit__(None, None, None)

    def send(self, requests: list[tuple[URL | str, Any]], done: Callable[[Outcomes], None]) -> None:
        for url, token in requests:
            self._waiting.append((url, token, done))
        self._start()

    def _start(self) -> None:
        while self._waiting and len(self._tasks) < self.concurrency:
            url, token, done = self._waiting.popleft()
            task = asyncio.create_task(self._one(url, token, done))
            self._tasks.add(task)
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._start()

    async def _one(self, url: URL | str, token: Any, done: Callable[[Outcomes], None]) -> None:
        try:
            await self.inner.get(url)
        except DeliveryError as err:
            self._report(done, token, err)
        except Exception as exc:  # a bug, not an answer: seen (last error), retried, bounded
            self._report(done, token, TransientError(f"{type(exc).__name__}: {exc}"))
        else:
            self._report(done, token, None)

    def _report(self, done: Callable[[Outcomes], None], token: Any, err: Any) -> None:
        if not self._ready:
            asyncio.get_running_loop().call_soon(self._flush)
        self._ready.append((done, token, err))

    def _flush(self) -> None:
        ready, self._ready = self._ready, []
        if ready:
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


AnyTransport = Transport | BatchTransport


class AiohttpTransport:
    """One aiohttp session: ``concurrency`` connections, the options' timeouts, verified TLS."""

    def __init__(self, options: SendOptions) -> None:
        self.options = options
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        opts = self.options
        connector = aiohttp.TCPConnector(
            limit=opts.concurrency, ttl_dns_cache=300, ssl=verifying_context()
        )
        timeout = aiohttp.ClientTimeout(total=opts.total_timeout, sock_connect=opts.connect_timeout)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
            auto_decompress=False,
        )
        # aiohttp silently sends a GET again when a kept-alive connection is closed under it:
        # a second copy the sender never sees, outside --max-attempts and the duplicate bound.
        # The sender makes that decision itself (the attribute exists since aiohttp 3.11).
        self._session._retry_connection = False
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def get(self, url: URL | str) -> None:
        """See :meth:`Transport.get`. This runs once per request: keep it lean."""
        assert self._session is not None, "enter the transport first"
        if url.__class__ is str:  # as written: aiohttp would re-encode text
            url = URL(url, encoded=True)
        try:
            async with self._session.get(url, allow_redirects=False) as response:
                await response.read()
                status = response.status
                if 200 <= status < 300:
                    return
                error = answer_error(status, response.reason or "", response.headers)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise translate(exc) from exc
        if error is not None:
            raise error


def answer_error(status: int, reason: str, headers: Mapping[str, str]) -> DeliveryError | None:
    """What an HTTP answer means: None for 2xx, else the error to raise (see :func:`classify`).

    A redirect is never followed (the endpoint is wrong): the error says where it pointed.
    ``headers`` is looked up for ``Location`` and ``Retry-After`` as spelled here.
    """
    if 300 <= status < 400:
        reason += f" (redirect to {headers.get('Location', '?')} not followed)"
    retry_after = parse_retry_after(headers.get("Retry-After"), time.time())
    return classify(status, reason, retry_after)


def translate(exc: BaseException) -> TransientError | PermanentError:
    """aiohttp and timeout exceptions as the project's delivery errors, in one place."""
    if isinstance(exc, aiohttp.InvalidURL):
        return PermanentError(f"invalid URL: {exc}", maybe_delivered=False)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return TransientError("connect timed out", maybe_delivered=False)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TransientError(f"cannot connect: {exc.strerror or exc}", maybe_delivered=False)
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return TransientError("timed out waiting for the answer")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return TransientError("server closed the connection")
    if isinstance(exc, aiohttp.ClientOSError):
        return TransientError(f"connection error: {exc.strerror or exc}")
    return TransientError(f"{type(exc).__name__}: {exc}")


def classify(status: int, reason: str, retry_after: float | None) -> DeliveryError | None:
    """None for 2xx; a transient or permanent error for anything else."""
    if 200 <= status < 300:
        return None
    text = f"{status} {reason}".strip()
    # An answer with an error status says the event was not taken: resending is no duplicate.
    if status in TRANSIENT_STATUSES or 500 <= status < 600:
        return TransientError(text, status=status, retry_after=retry_after, maybe_delivered=False)
    return PermanentError(text, status=status, maybe_delivered=False)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
