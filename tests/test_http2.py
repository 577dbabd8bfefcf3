"""HTTP/2 with the curl transport (``http2=True``), against a real HTTP/2 server over TLS.

The server is hypercorn serving a tiny ASGI app in its own thread on 127.0.0.1, offering
``h2`` and ``http/1.1`` by ALPN, with a certificate for 127.0.0.1 and localhost signed by a
CA made for the module (the openssl binary makes both): the client trusts that CA through
``SSL_CERT_FILE``, so verification really happens and passes. The app records, per request,
the HTTP version, the raw query string and the client's address: the client's port tells
the connections apart.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from yarl import URL

from importer import api
from importer.curl import CurlTransport  # imports pycurl only when one is made
from importer.errors import DeliveryError, TransientError
from importer.options import SendOptions

from .helpers import SALES_SCHEMA, write_sales

pytest.importorskip("pycurl")

TIMEOUT = 10.0  # seconds any one exchange may take before it counts as hung
HOLD = 0.05  # seconds the server holds each request, so that concurrent ones overlap


# --- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA the client trusts
    server: Cert  # for 127.0.0.1 and localhost, signed by that CA
    self_signed: Cert  # for 127.0.0.1 and localhost too, signed by nobody trusted


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, a server certificate it signed, and a self-signed one, made now."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("h2-tls")
    names = "subjectAltName=DNS:localhost,IP:127.0.0.1"
    leaf = ["-addext", names, "-addext", "basicConstraints=critical,CA:FALSE"]
    leaf += ["-addext", "extendedKeyUsage=serverAuth"]

    def req(name: str, subject: str, *extra: str) -> Cert:
        cert, key = folder / f"{name}.pem", folder / f"{name}.key"
        subprocess.run(
            [
                *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-subj", subject, "-keyout", str(key), "-out", str(cert), *extra),
            ],
            check=True,
            capture_output=True,
        )
        return Cert(cert, key)

    ca = req("ca", "/CN=event-backfill test CA", "-addext", "keyUsage=critical,keyCertSign")
    server = req("server", "/CN=localhost", "-CA", str(ca.cert), "-CAkey", str(ca.key), *leaf)
    self_signed = req("self-signed", "/CN=localhost", *leaf)
    return Certs(ca.cert, server, self_signed)


@pytest.fixture
def trust_test_ca(certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Certs]:
    """The client (libcurl through curl.ca_bundle, and the preflight's Python ssl) trusts
    the test CA and nothing else (this machine's environment names its own CA files)."""
    empty = tmp_path / "no-ca-dir"
    empty.mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca))
    monkeypatch.setenv("SSL_CERT_DIR", str(empty))
    yield certs


# --- the server -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the ASGI app saw it."""

    http_version: str  # "2", "1.1"
    query: str
    client: tuple[str, int]


class _Problems(logging.Handler):
    """Keeps what is logged at WARNING and above (hypercorn's errors, asyncio's)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class H2Server:
    """hypercorn over TLS on 127.0.0.1 in its own thread with its own event loop, answering
    every request 200 (empty body) after ``hold`` seconds; ``with`` starts and stops it."""

    cert: Cert
    hold: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    problems: _Problems = field(default_factory=_Problems)
    _errors: list[BaseException] = field(default_factory=list)
    _started: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None

    def url(self, target: str = "/event") -> str:
        return f"https://127.0.0.1:{self.port}{target}"

    def __enter__(self) -> H2Server:
        # Bound and listening before the thread starts: a client may connect at once.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.port = int(sock.getsockname()[1])
        logger = logging.getLogger(f"{__name__}.hypercorn.{self.port}")
        logger.setLevel(logging.INFO)
        for watched in (logger, logging.getLogger("asyncio")):  # asyncio: a failed callback
            watched.addHandler(self.problems)
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]  # hypercorn's socket from now on
        config.certfile, config.keyfile = str(self.cert.cert), str(self.cert.key)
        config.accesslog = None
        config.errorlog = logger
        config.graceful_timeout = 2.0
        self._thread = threading.Thread(
            target=self._run, args=(config,), name="h2-server", daemon=True
        )
        self._thread.start()
        while not self._started.wait(0.05):
            if not self._thread.is_alive():
                raise RuntimeError(f"the HTTP/2 server did not start: {self._errors}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._thread is not None and self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(TIMEOUT)
        for watched in (f"{__name__}.hypercorn.{self.port}", "asyncio"):
            logging.getLogger(watched).removeHandler(self.problems)
        assert not self._thread.is_alive(), "the HTTP/2 server did not stop"
        assert not self._errors, self._errors

    def _run(self, config: Config) -> None:
        try:
            asyncio.run(self._serve(config))
        except BaseException as exc:  # the test's thread reports it
            self._errors.append(exc)

    async def _serve(self, config: Config) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await serve(self._app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]

    async def _app(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Any],
        send: Callable[[dict[str, Any]], Any],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                    self._started.set()
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["type"] == "http", scope["type"]
        client = scope["client"]
        self.seen.append(
            Seen(scope["http_version"], scope["query_string"].decode("ascii"), tuple(client))
        )
        if self.hold:
            await asyncio.sleep(self.hold)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def queries(self) -> Counter[str]:
        return Counter(s.query for s in self.seen)

    def versions(self) -> set[str]:
        return {s.http_version for s in self.seen}

    def connections(self) -> set[tuple[str, int]]:
        return {s.client for s in self.seen}


# --- the client: the sender's way of driving a batch transport ------------------------------


def send_all(urls: list[str], options: SendOptions) -> dict[int, DeliveryError | None]:
    """Every URL through a fresh CurlTransport, with at most ``options.concurrency`` out at
    once (as the sender keeps it): each outcome's place frees one for the next URL."""

    async def scenario() -> dict[int, DeliveryError | None]:
        outcomes: dict[int, DeliveryError | None] = {}
        waiting = deque(enumerate(urls))
        everything = asyncio.Event()
        out = 0

        async with CurlTransport(options) as transport:

            def top_up() -> None:
                nonlocal out
                batch: list[tuple[URL | str, Any]] = []
                while waiting and out + len(batch) < options.concurrency:
                    token, url = waiting.popleft()
                    batch.append((url, token))
                if batch:
                    out += len(batch)
                    transport.send(batch, done)

            def done(batch: list[tuple[Any, DeliveryError | None]]) -> None:
                nonlocal out
                for token, error in batch:
                    assert token not in outcomes, f"{token} reported twice"
                    outcomes[token] = error
                out -= len(batch)
                top_up()
                if len(outcomes) == len(urls):
                    everything.set()

            top_up()
            await asyncio.wait_for(everything.wait(), TIMEOUT)
        return outcomes

    return asyncio.run(scenario())


def urls_of(server: H2Server, count: int) -> list[str]:
    return [server.url(f"/event?n={n}") for n in range(count)]


# --- the tests ------------------------------------------------------------------------------


def test_http2_multiplexes_over_one_connection(trust_test_ca: Certs) -> None:
    options = SendOptions(transport="curl", http2=True, concurrency=16)
    with H2Server(trust_test_ca.server, hold=HOLD) as server:
        outcomes = send_all(urls_of(server, 60), options)
    assert outcomes == dict.fromkeys(range(60))
    assert server.queries() == Counter(f"n={n}" for n in range(60))
    assert server.versions() == {"2"}
    assert len(server.connections()) <= 2, server.connections()
    assert not server.problems.records, server.problems.records


def test_without_http2_it_is_http11_over_many_connections(trust_test_ca: Certs) -> None:
    options = SendOptions(transport="curl", concurrency=16)
    with H2Server(trust_test_ca.server, hold=HOLD) as server:
        outcomes = send_all(urls_of(server, 60), options)
    assert outcomes == dict.fromkeys(range(60))
    assert server.queries() == Counter(f"n={n}" for n in range(60))
    assert server.versions() == {"1.1"}
    assert 2 < len(server.connections()) <= 16, server.connections()
    assert not server.problems.records, server.problems.records


def test_send_over_http2_end_to_end(trust_test_ca: Certs, tmp_path: Path) -> None:
    rows = 40
    data = write_sales(tmp_path / "sales.csv", 0, rows)
    previewed = api.preview(data, schema=SALES_SCHEMA, n=None)
    with H2Server(trust_test_ca.server) as server:
        report = api.send(
            data,
            schema=SALES_SCHEMA,
            endpoint=server.url(),
            ledger=None,
            transport="curl",
            http2=True,
            concurrency=8,
        )
    assert report.balanced(), report.accounting
    assert (report.sent, report.rejected, report.failed, report.pending) == (rows, 0, 0, 0)
    assert server.queries() == Counter(urlsplit(u).query for u in previewed["url"])
    assert set(server.queries().values()) == {1}
    assert server.versions() == {"2"}
    assert not server.problems.records, server.problems.records


def test_self_signed_server_is_refused_before_the_request(trust_test_ca: Certs) -> None:
    options = SendOptions(transport="curl", http2=True, concurrency=4)
    with H2Server(trust_test_ca.self_signed) as server:
        outcomes = send_all([server.url("/event?n=1")], options)
    error = outcomes[0]
    assert isinstance(error, TransientError), error
    assert error.maybe_delivered is False, error
    assert server.seen == []
