"""Both transports, aiohttp's and libcurl's, classify every outcome alike.

One set of tests, parametrized over ``transport`` ("aiohttp", "curl"), against real servers
on 127.0.0.1: raw asyncio servers that read the request line byte for byte and then answer,
hang, trickle, close or reset as each case needs. :class:`Client` gives both transports one
call shape (``await client.outcome(url)``: None for a 2xx, else the :class:`DeliveryError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import pytest

from importer._version import __version__
from importer.errors import DeliveryError, PermanentError, TransientError
from importer.options import SendOptions
from importer.sender import make_transport
from importer.transport import AiohttpTransport, AnyTransport

from .helpers import Cert, self_signed_cert

USER_AGENT = f"event-backfill/{__version__}"
TEST_TIMEOUT = 10.0  # seconds any one scenario may take before it counts as hung


@pytest.fixture(params=["aiohttp", "curl"])
def transport(request: pytest.FixtureRequest) -> str:
    """The transport's name; curl's is skipped when pycurl is not installed."""
    if request.param == "curl":
        pytest.importorskip("pycurl")
    return str(request.param)


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, TEST_TIMEOUT))


# --- a raw server ---------------------------------------------------------------------------


@dataclass
class Request:
    """One request as it arrived: the raw request line and the headers (names lowercased)."""

    line: bytes
    headers: dict[str, str]
    connection: int  # which connection it came on (1, 2, ...)
    nth: int  # its place on that connection (1 for the first)

    @property
    def target(self) -> bytes:
        return self.line.split(b" ")[1]


@dataclass
class Conn:
    """One accepted connection, as a handler sees it."""

    server: Server
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    number: int
    count: int = 0  # requests read on it so far

    async def request(self) -> Request | None:
        """The next request on this connection (a GET: the header block is all of it), or
        None when the client closed it."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        line, *rest = head[:-4].split(b"\r\n")
        headers = {}
        for raw in rest:
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        self.count += 1
        request = Request(line, headers, self.number, self.count)
        self.server.requests.append(request)
        self.server.arrival.set()
        return request

    async def answer(
        self, status: str = "200 OK", headers: dict[str, str] | None = None, body: bytes = b""
    ) -> None:
        lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await self.writer.drain()

    async def hang(self) -> None:
        """Say nothing until the client goes away."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(4096):
                pass

    def close(self) -> None:
        """Close the connection in order (FIN)."""
        self.writer.close()

    def reset(self) -> None:
        """Cut the connection off with a RST."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Handler = Callable[[Conn], Awaitable[None]]


async def answer_ok(conn: Conn) -> None:
    while await conn.request() is not None:
        await conn.answer()


@dataclass
class Server:
    """An asyncio server on 127.0.0.1 that runs ``handler`` per connection and records every
    request; on exit it closes every connection it still holds."""

    handler: Handler = answer_ok
    tls: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    open: int = 0
    max_open: int = 0
    errors: list[BaseException] = field(default_factory=list)
    arrival: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        await self._server.wait_closed()
        assert not self.errors, self.errors

    async def arrived(self, count: int) -> None:
        """Until ``count`` requests have arrived."""
        while len(self.requests) < count:
            self.arrival.clear()
            await self.arrival.wait()

    def url(self, target: str = "/event", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{target}"

    def targets(self) -> Counter[bytes]:
        return Counter(r.target for r in self.requests)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.handler(Conn(self, reader, writer, self.connections))
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:  # a broken handler: fail the test, not the log
            self.errors.append(exc)
        finally:
            self.open -= 1
            writer.close()
            self._tasks.discard(task)


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- both transports behind one call shape --------------------------------------------------


class Client:
    """A transport by name, entered; :meth:`outcome` sends one URL and says how it went."""

    def __init__(self, name: str, **options: Any) -> None:
        self.name = name
        self.transport: AnyTransport = make_transport(SendOptions(transport=name, **options))
        self.reported: list[tuple[Any, DeliveryError | None]] = []  # curl: every done() item
        self._waiting: dict[int, asyncio.Future[DeliveryError | None]] = {}
        self._tasks: list[asyncio.Task[DeliveryError | None]] = []
        self._next = 0

    async def __aenter__(self) -> Client:
        await self.transport.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.transport.__aexit__(None, None, None)
        tokens = Counter(token for token, _ in self.reported)
        assert all(n == 1 for n in tokens.values()), f"reported more than once: {tokens}"

    def start(self, url: str) -> asyncio.Future[DeliveryError | None]:
        """Send ``url`` now; the future holds None (2xx) or the error."""
        if isinstance(self.transport, AiohttpTransport):
            task = asyncio.ensure_future(self._get(self.transport, url))
            self._tasks.append(task)
            return task
        self._next += 1
        token = self._next
        future = self._waiting[token] = asyncio.get_running_loop().create_future()
        self.transport.send([(url, token)], self._done)
        return future

    async def outcome(self, url: str) -> DeliveryError | None:
        return await self.start(url)

    async def cancel(self) -> None:
        """Cut off every request out: curl's cancel(), or cancelling aiohttp's get tasks."""
        if isinstance(self.transport, AiohttpTransport):
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        else:
            await self.transport.cancel()

    @staticmethod
    async def _get(transport: AiohttpTransport, url: str) -> DeliveryError | None:
        try:
            await transport.get(url)
        except DeliveryError as exc:
            return exc
        return None

    def _done(self, batch: list[tuple[Any, DeliveryError | None]]) -> None:
        self.reported.extend(batch)
        for token, error in batch:
            future = self._waiting.get(token)
            if future is not None and not future.done():
                future.set_result(error)


async def outcome(name: str, url: str, **options: Any) -> DeliveryError | None:
    """One request through a fresh transport."""
    async with Client(name, **options) as client:
        return await client.outcome(url)


def check(
    error: DeliveryError | None,
    kind: type[DeliveryError],
    *,
    status: int | None,
    maybe_delivered: bool,
    retry_after: float | None = None,
) -> None:
    assert isinstance(error, kind), f"expected {kind.__name__}, got {error!r}"
    got = (error.status, error.maybe_delivered, error.retry_after)
    assert got == (status, maybe_delivered, retry_after), f"{error.reason!r}: {got}"


# --- answers --------------------------------------------------------------------------------

ODD_TARGETS = [
    "/event?u=a%2Fb&n=caf%C3%A9&p=1+2&q=%20x&x123=456",
    "/event?n=caf%c3%a9&e=&f==&g=a%3Db%26c&h=%25&t=~-._*!$'(),;:@/?",
    "/v1%2Fx/ev%20ent?a=%7E&b=%2B&c=+",
]


@pytest.mark.parametrize("target", ODD_TARGETS)
def test_2xx_is_done_and_the_request_goes_out_as_written(transport: str, target: str) -> None:
    async def scenario() -> None:
        async with Server() as server:
            assert await outcome(transport, server.url(target)) is None
        [request] = server.requests
        assert request.line == f"GET {target} HTTP/1.1".encode()
        assert request.headers["user-agent"] == USER_AGENT
        assert request.headers["host"] == f"127.0.0.1:{server.port}"

    run(scenario())


def test_redirect_is_not_followed(transport: str) -> None:
    async def scenario() -> None:
        async with Server() as elsewhere:
            location = elsewhere.url("/elsewhere")

            async def redirect(conn: Conn) -> None:
                while await conn.request() is not None:
                    await conn.answer("302 Found", {"Location": location})

            async with Server(redirect) as server:
                error = await outcome(transport, server.url())
        check(error, PermanentError, status=302, maybe_delivered=False)
        assert error is not None
        assert f"redirect to {location} not followed" in error.reason
        assert len(server.requests) == 1 and elsewhere.requests == []

    run(scenario())


def in_20_seconds() -> str:
    return formatdate(time.time() + 20, usegmt=True)


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retry_after"),
    [
        ("503 Service Unavailable", {"Retry-After": "7"}, TransientError, 7.0),
        ("429 Too Many Requests", {"Retry-After": in_20_seconds}, TransientError, 20.0),
        ("500 Internal Server Error", {}, TransientError, None),
        ("408 Request Timeout", {}, TransientError, None),
        ("404 Not Found", {}, PermanentError, None),
        ("400 Bad Request", {}, PermanentError, None),
    ],
    ids=["503-retry-after-seconds", "429-retry-after-date", "500", "408", "404", "400"],
)
def test_error_statuses(
    transport: str,
    status: str,
    headers: dict[str, Any],
    kind: type[DeliveryError],
    retry_after: float | None,
) -> None:
    async def scenario() -> None:
        async def answer(conn: Conn) -> None:
            while await conn.request() is not None:
                now = {k: v() if callable(v) else v for k, v in headers.items()}
                await conn.answer(status, now, b"no")

        async with Server(answer) as server:
            error = await outcome(transport, server.url())
        code = int(status.split()[0])
        assert isinstance(error, kind), f"expected {kind.__name__}, got {error!r}"
        assert (error.status, error.maybe_delivered) == (code, False)
        assert error.reason == status
        if retry_after is None:
            assert error.retry_after is None
        else:
            assert error.retry_after is not None
            assert abs(error.retry_after - retry_after) <= 2, error.retry_after
        assert len(server.requests) == 1

    run(scenario())


def an_hour_ago() -> str:
    return formatdate(time.time() - 3600, usegmt=True)


@pytest.mark.parametrize(
    ("header", "aiohttp", "curl"),
    [
        ("0", 0.0, None),
        (an_hour_ago, 0.0, None),
        ("1.5", 1.5, 1.0),
        ("100000", 100000.0, 21600.0),
    ],
    ids=["zero", "date-in-the-past", "fraction", "over-6-hours"],
)
def test_retry_after_edge_values(
    transport: str,
    header: str | Callable[[], str],
    aiohttp: float | None,
    curl: float | None,
) -> None:
    """Retry-After at its edges. aiohttp's transport reads the header itself
    (:func:`importer.transport.parse_retry_after`): 0 and a date gone by mean "now", a
    fraction is kept, a long wait is not cut. The curl transport takes what libcurl parsed
    (reading every header in Python cost ~20% of its throughput): whole seconds only, 0 (or a
    date gone by) reads as no Retry-After (the sender backs off instead: it waits, never
    sooner), a non-standard fraction is cut to whole seconds, and libcurl caps it at 6 h
    (the sender caps it at --max-retry-after, 120 s by default, anyway)."""
    expected = {"aiohttp": aiohttp, "curl": curl}[transport]

    async def answer(conn: Conn) -> None:
        while await conn.request() is not None:
            value = header() if callable(header) else header
            await conn.answer("503 Service Unavailable", {"Retry-After": value})

    async def scenario() -> None:
        async with Server(answer) as server:
            error = await outcome(transport, server.url())
        check(error, TransientError, status=503, maybe_delivered=False, retry_after=expected)

    run(scenario())


@pytest.mark.parametrize(
    ("status", "headers", "aiohttp", "curl"),
    [
        ("503 Slow Down", {}, "503 Slow Down", "503 Service Unavailable"),
        ("599 Network Connect Timeout", {}, "599 Network Connect Timeout", "599"),
        (
            "302 Found",
            {"Location": "/elsewhere"},
            "302 Found (redirect to /elsewhere not followed)",
            "302 Found (redirect to {base}/elsewhere not followed)",
        ),
    ],
    ids=["own-reason-phrase", "unknown-status", "relative-location"],
)
def test_reason_of_a_failed_row(
    transport: str, status: str, headers: dict[str, str], aiohttp: str, curl: str
) -> None:
    """The reason kept for a failed row (the ledger, the failures export): aiohttp's
    transport keeps the server's status line and Location as sent; the curl transport the
    status with its standard phrase and the Location as libcurl resolved it (wording only:
    what the answer means is the same)."""

    async def answer(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.answer(status, headers)

    async def scenario() -> None:
        async with Server(answer) as server:
            error = await outcome(transport, server.url())
            base = server.url("").rstrip("/")
        expected = {"aiohttp": aiohttp, "curl": curl}[transport].format(base=base)
        assert error is not None and error.reason == expected

    run(scenario())


# --- no connection: never written ----------------------------------------------------------


def test_connection_refused(transport: str) -> None:
    error = asyncio.run(outcome(transport, f"http://127.0.0.1:{closed_port()}/event"))
    check(error, TransientError, status=None, maybe_delivered=False)


def test_name_that_does_not_resolve(transport: str) -> None:
    url = "http://name-that-does-not-resolve.invalid/event"
    started = time.monotonic()
    error = asyncio.run(outcome(transport, url, connect_timeout=3, total_timeout=5))
    check(error, TransientError, status=None, maybe_delivered=False)
    assert time.monotonic() - started < 4


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port on 127.0.0.1 whose connects hang: a listener whose one-connection backlog is
    full, so the kernel drops further SYNs (skipped where it does not)."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        filler = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=1))
        assert filler.fileno() >= 0
        with socket.socket() as probe:
            probe.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                probe.connect(("127.0.0.1", port))
            _, writable, _ = select.select([], [probe], [], 0.2)
        if writable:
            pytest.skip("this kernel does not hold connects to a full backlog")
        yield port


def test_connect_timeout(transport: str, blackhole: int) -> None:
    """No connection within connect_timeout: the request was never written."""
    url = f"http://127.0.0.1:{blackhole}/event"
    started = time.monotonic()
    error = asyncio.run(outcome(transport, url, connect_timeout=0.3, total_timeout=5))
    check(error, TransientError, status=None, maybe_delivered=False)
    assert time.monotonic() - started < 2


def test_total_timeout_while_connecting(
    transport: str, blackhole: int, request: pytest.FixtureRequest
) -> None:
    """The total timeout runs out before the connection opens (total_timeout shorter than
    connect_timeout, or a slow name lookup): the request was never written either."""
    if transport == "aiohttp":
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="known, conservative: aiohttp raises a bare TimeoutError for the total "
                "timeout whether or not the request was written, so it reads 'may have "
                "arrived' (counted in the duplicate bound); curl knows (prerequest callback)",
            )
        )
    url = f"http://127.0.0.1:{blackhole}/event"
    started = time.monotonic()
    error = asyncio.run(outcome(transport, url, connect_timeout=5, total_timeout=0.3))
    check(error, TransientError, status=None, maybe_delivered=False)
    assert time.monotonic() - started < 2


# --- written, then no answer: maybe delivered ----------------------------------------------


def test_no_answer_times_out(transport: str) -> None:
    async def scenario() -> None:
        async def silent(conn: Conn) -> None:
            await conn.request()
            await conn.hang()

        async with Server(silent) as server:
            started = time.monotonic()
            error = await outcome(transport, server.url(), total_timeout=0.5)
            took = time.monotonic() - started
        check(error, TransientError, status=None, maybe_delivered=True)
        assert 0.4 < took < 2, took
        assert server.targets() == {b"/event": 1}

    run(scenario())


def test_slow_body_is_bounded_by_the_total_timeout(transport: str) -> None:
    async def trickle(conn: Conn) -> None:
        await conn.request()
        conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            await conn.writer.drain()
            await asyncio.sleep(0.2)
            if conn.writer.is_closing() or conn.reader.at_eof():
                return
            conn.writer.write(b"x")

    async def scenario() -> None:
        async with Server(trickle) as server:
            started = time.monotonic()
            error = await outcome(transport, server.url(), total_timeout=0.6)
            took = time.monotonic() - started
        check(error, TransientError, status=None, maybe_delivered=True)
        assert 0.5 < took < 2, took
        assert server.targets() == {b"/event": 1}

    run(scenario())


def test_closed_without_an_answer(transport: str) -> None:
    async def read_and_close(conn: Conn) -> None:
        await conn.request()
        conn.close()

    async def scenario() -> None:
        async with Server(read_and_close) as server:
            error = await outcome(transport, server.url())
        check(error, TransientError, status=None, maybe_delivered=True)
        assert server.targets() == {b"/event": 1}

    run(scenario())


def test_reset_without_an_answer(transport: str) -> None:
    async def read_and_reset(conn: Conn) -> None:
        await conn.request()
        conn.reset()

    async def scenario() -> None:
        async with Server(read_and_reset) as server:
            error = await outcome(transport, server.url())
        check(error, TransientError, status=None, maybe_delivered=True)
        assert server.targets() == {b"/event": 1}

    run(scenario())


def test_kept_alive_connection_closed_under_a_request_is_not_resent(transport: str) -> None:
    """The second request on a kept-alive connection is read, then the connection closed: it
    comes back maybe delivered, and neither client sends it again by itself (a new connection
    would get a 200 for it: a silent duplicate)."""

    async def first_only(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            if request.nth == 1:
                await conn.answer("200 OK", {"Connection": "keep-alive"})
            else:
                conn.close()
                return

    async def scenario() -> None:
        async with Server(first_only) as server, Client(transport) as client:
            assert await client.outcome(server.url("/event?n=1")) is None
            error = await client.outcome(server.url("/event?n=2"))
            await asyncio.sleep(0.1)  # a resend, if any, has arrived by now
        check(error, TransientError, status=None, maybe_delivered=True)
        assert server.targets() == {b"/event?n=1": 1, b"/event?n=2": 1}
        first, second = server.requests[:2]
        assert (first.connection, first.nth, second.connection, second.nth) == (1, 1, 1, 2)

    run(scenario())


def test_idle_connection_closed_by_the_server_is_not_used_again(
    transport: str, request: pytest.FixtureRequest
) -> None:
    """The server closes a kept-alive connection while it is idle (its own keep-alive timeout,
    before any next request): the next request goes on a new connection and succeeds; it is
    no failure, and nothing "may have arrived" twice."""
    if transport == "curl":
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="known, conservative: libcurl checks a pooled connection only after "
                "~1 s idle, so a request written into one the server closed 0.15 s before "
                "reads 'may have arrived' (counted; its retry connects afresh, so it cannot "
                "meet another dead one)",
            )
        )

    async def answer_then_close(conn: Conn) -> None:
        await conn.request()
        await conn.answer("200 OK", {"Connection": "keep-alive"})
        await asyncio.sleep(0.05)
        conn.close()

    async def scenario() -> None:
        async with Server(answer_then_close) as server, Client(transport) as client:
            assert await client.outcome(server.url("/event?n=1")) is None
            await asyncio.sleep(0.2)  # closed 0.15 s ago: the client has seen the FIN
            error = await client.outcome(server.url("/event?n=2"))
        assert error is None, f"{error!r} (maybe_delivered={error.maybe_delivered})"
        assert server.targets() == {b"/event?n=1": 1, b"/event?n=2": 1}

    run(scenario())


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """A self-signed certificate for 127.0.0.1 and localhost: only the issuer is wrong."""
    return self_signed_cert(tmp_path_factory.mktemp("tls"), "DNS:localhost,IP:127.0.0.1")


def test_self_signed_certificate_is_refused_before_the_request(
    transport: str, self_signed: Cert
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(self_signed.cert, self_signed.key)

    async def scenario() -> None:
        async with Server(tls=context) as server:
            error = await outcome(transport, server.url(scheme="https"))
        check(error, TransientError, status=None, maybe_delivered=False)
        assert server.requests == []

    run(scenario())


# --- cancel, concurrency ----------------------------------------------------------------------


def test_cancel_cuts_off_hanging_requests(transport: str) -> None:
    async def silent(conn: Conn) -> None:
        await conn.request()
        await conn.hang()

    async def scenario() -> None:
        async with Server(silent) as server:
            async with Client(transport, concurrency=4) as client:
                pending = [client.start(server.url(f"/event?n={n}")) for n in range(3)]
                await server.arrived(3)
                started = time.monotonic()
                await client.cancel()
                assert time.monotonic() - started < 1
                await asyncio.sleep(0.3)
                assert client.reported == []  # curl: done() never called for them
                if transport == "curl":
                    assert not any(f.done() for f in pending)
                else:
                    assert all(f.cancelled() for f in pending)
                exiting = time.monotonic()
            assert time.monotonic() - exiting < 1
            assert server.targets() == {f"/event?n={n}".encode(): 1 for n in range(3)}

    run(scenario())


def test_concurrency_bounds_connections_and_requests(transport: str) -> None:
    busy = 0
    most = 0

    async def slow_ok(conn: Conn) -> None:
        nonlocal busy, most
        while await conn.request() is not None:
            busy += 1
            most = max(most, busy)
            await asyncio.sleep(0.2)
            busy -= 1
            await conn.answer()

    async def scenario() -> None:
        async with Server(slow_ok) as server, Client(transport, concurrency=4) as client:
            started = time.monotonic()
            results = await asyncio.gather(
                *(client.start(server.url(f"/event?n={n}")) for n in range(12))
            )
            took = time.monotonic() - started
        assert results == [None] * 12
        assert most == 4 and server.max_open <= 4, (most, server.max_open)
        assert server.targets() == {f"/event?n={n}".encode(): 1 for n in range(12)}
        assert took < 1.5, took

    run(scenario())
