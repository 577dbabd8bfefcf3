"""Preflight: endpoint templates, host names, and real connections to servers on 127.0.0.1.

Nothing here contacts a non-loopback address; the only name looked up that is not loopback is
in the reserved ``.invalid`` TLD, which never resolves.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from importer.errors import UsageError
from importer.preflight import (
    HostCheck,
    Template,
    check_host,
    is_loopback,
    parse_template,
    preflight,
    run_preflight,
    verifying_context,
)

from .helpers import Cert, self_signed_cert

DEFAULT = "https://{project_id}.log.optimizely.com/event"


# --- parse_template -------------------------------------------------------------------------

GOOD = [
    (DEFAULT, ("https", "{project_id}.log.optimizely.com", 443, "/event")),
    ("http://127.0.0.1:8765/event", ("http", "127.0.0.1", 8765, "/event")),
    ("HTTP://LocalHost:8080", ("http", "localhost", 8080, "/")),
    ("http://localhost", ("http", "localhost", 80, "/")),
    ("http://[::1]:9000/e", ("http", "[::1]", 9000, "/e")),
    ("https://[2001:db8::1]/e", ("https", "[2001:db8::1]", 443, "/e")),
    (
        "https://ev-{project_id}.example.com./v1/event",
        ("https", "ev-{project_id}.example.com.", 443, "/v1/event"),
    ),
    (
        "https://{project_id}.{project_id}.example.com/",
        ("https", "{project_id}.{project_id}.example.com", 443, "/"),
    ),
    ("http://h:65535/a%20b", ("http", "h", 65535, "/a%20b")),
    ("http://h:1/", ("http", "h", 1, "/")),
]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_parse_good_templates(text: str, expected: tuple[str, str, int, str]) -> None:
    template = parse_template(text)
    assert (template.scheme, template.host_pattern, template.port, template.path) == expected
    assert template.text == text


BAD = [
    (
        "127.0.0.1:8765/event",
        ["no scheme", "add http:// or https://", "'http://127.0.0.1:8765/event'"],
    ),
    ("localhost/event", ["no scheme", "add http:// or https://", "'http://localhost/event'"]),
    ("localhost:8080/event", ["add http:// or https://"]),
    ("log.optimizely.com/event", ["add http:// or https://", "'https://log.optimizely.com/event'"]),
    ("//h/event", ["add http:// or https://"]),
    ("ftp://h/event", ["'ftp'", "only http:// and https://"]),
    ("http:/h/event", ["malformed", "http://host/path"]),
    ("http:///event", ["no host"]),
    ("http://:8080/event", ["no host"]),
    ("http://h/{project_id}/event", ["{project_id} in the path", "only in the host"]),
    ("http://h/event?p={project_id}", ["query string", "builds the query itself"]),
    ("http://h/event?a=1", ["query string", "remove it"]),
    ("http://h/event#top", ["fragment"]),
    ("http://h:{project_id}/event", ["{project_id} in the port", "only in the host"]),
    ("http://{project_id}@h/event", ["{project_id} in the user info", "only in the host"]),
    ("http://user:secret@h/event", ["user info", "remove it", "user:***@"]),
    ("http://{account_id}.h/event", ["unknown placeholder '{account_id}'", "{project_id}"]),
    ("http://h/{}", ["unknown placeholder '{}'"]),
    ("http://{project_id.h/event", ["unmatched"]),
    ("http://h /event", ["whitespace", "position 8"]),
    ("http://h/ev ent", ["whitespace", "%20"]),
    (" http://h/event", ["whitespace"]),
    ("http://h/event\n", ["whitespace"]),
    ("http://h\t/event", ["whitespace"]),
    ("http://h:0/event", ["port '0'", "1 to 65535"]),
    ("http://h:65536/event", ["port '65536'", "1 to 65535"]),
    ("http://h:http/event", ["port 'http'", "1 to 65535"]),
    ("http://h:/event", ["port ''", "1 to 65535"]),
    ("http://h:-1/event", ["port '-1'"]),
    ("https://h:٣/event", ["port '٣'"]),
    ("http://::1/event", ["IPv6", "brackets"]),
    ("http://[::1/event", ["closing ']'"]),
    ("http://[zz]/event", ["not a valid IPv6"]),
    ("http://[::1]x/event", ["expected ':port'"]),
    ("http://[{project_id}]/event", ["inside an IPv6 address"]),
    ("http://h..com/event", ["empty label"]),
    ("http://.h.com/event", ["empty label"]),
    ("http://bücher.de/event", ["ASCII", "punycode"]),
    ("http://h!x.com/event", ["'!'", "letters, digits"]),
    ("http://" + "a" * 64 + ".com/event", ["64 bytes", "at most 63"]),
    ("", ["empty"]),
]


@pytest.mark.parametrize(("text", "words"), BAD)
def test_parse_bad_templates(text: str, words: list[str]) -> None:
    with pytest.raises(UsageError) as info:
        parse_template(text)
    assert info.value.exit_code == 2
    message = str(info.value)
    if text:
        assert repr(text).replace("secret", "***") in message  # the template is quoted
    for word in words:
        assert word in message


def test_password_is_never_shown() -> None:
    for text in ("http://user:secret@h/event", "http://user:secret@h/event?q=1"):
        with pytest.raises(UsageError) as info:
            parse_template(text)
        assert "secret" not in str(info.value)


def test_host_for() -> None:
    template = parse_template(DEFAULT)
    assert template.per_project
    assert template.host_for("1234567") == "1234567.log.optimizely.com"
    fixed = parse_template("http://127.0.0.1:8765/event")
    assert not fixed.per_project
    assert fixed.host_for("1234567") == "127.0.0.1"


def test_template_is_frozen() -> None:
    template = parse_template(DEFAULT)
    with pytest.raises(AttributeError):
        template.port = 1  # type: ignore[misc]
    assert template == Template("https", "{project_id}.log.optimizely.com", 443, "/event", DEFAULT)


# --- check_host -----------------------------------------------------------------------------


def test_check_host_label_limit() -> None:
    template = parse_template(DEFAULT)
    check_host(template.host_for("9" * 63))
    host = template.host_for("9" * 64)
    with pytest.raises(UsageError) as info:
        check_host(host)
    assert info.value.exit_code == 2
    assert repr(host) in str(info.value)
    assert "64 bytes" in str(info.value)
    assert "at most 63" in str(info.value)


def test_check_host_name_limit() -> None:
    template = parse_template("https://{project_id}." + "b" * 50 + ".c" * 88 + "/event")
    ok = template.host_for("1" * 26)
    assert len(ok) == 253
    check_host(ok)
    check_host(ok + ".")  # the final dot does not count
    host = template.host_for("1" * 27)
    with pytest.raises(UsageError) as info:
        check_host(host)
    assert repr(host) in str(info.value)
    assert "254 bytes" in str(info.value)
    assert "at most 253" in str(info.value)


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "::1", "[::1]", "[2001:db8::1]", "localhost", "a-b_c.d."]
)
def test_check_host_accepts(host: str) -> None:
    check_host(host)


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ("", ["empty"]),
        ("a..b", ["empty label"]),
        ("a/b.com", ["characters"]),
        ("1 2.com", ["characters"]),
    ],
)
def test_check_host_refuses(host: str, words: list[str]) -> None:
    with pytest.raises(UsageError) as info:
        check_host(host)
    for word in words:
        assert word in str(info.value)


# --- is_loopback ----------------------------------------------------------------------------

LOOPBACK = [
    ("localhost", True),
    ("LOCALHOST", True),
    ("localhost.", True),
    ("api.localhost", True),
    ("127.0.0.1", True),
    ("127.255.255.254", True),
    ("127.0.0.2", True),
    ("::1", True),
    ("[::1]", True),
    ("0:0:0:0:0:0:0:1", True),
    ("::ffff:127.0.0.1", True),
    ("128.0.0.1", False),
    ("10.0.0.1", False),
    ("0.0.0.0", False),
    ("::", False),
    ("[::2]", False),
    ("localhost.com", False),
    ("notlocalhost", False),
    ("mylocalhost.example", False),
    ("example.com", False),
    ("", False),
]


@pytest.mark.parametrize(("host", "expected"), LOOPBACK)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


# --- real servers on 127.0.0.1 --------------------------------------------------------------


@dataclass
class Seen:
    """What a test server saw: one entry of received bytes per connection."""

    received: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


def recording_handler(seen: Seen) -> Callable[..., Awaitable[None]]:
    """Read each connection until the client closes it, and note every byte received."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunks = []
        try:
            while chunk := await reader.read(65536):
                chunks.append(chunk)
        except (ConnectionError, ssl.SSLError):
            pass
        seen.received.append(b"".join(chunks))
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
        seen.closed.set()

    return handle


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


def test_preflight_connects_and_sends_nothing() -> None:
    async def scenario() -> tuple[list[HostCheck], Seen, int]:
        seen = Seen()
        server = await asyncio.start_server(recording_handler(seen), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            template = parse_template(f"http://127.0.0.1:{port}/event")
            checks = await preflight(template, ["1234567", "1234567", "42"])
            await asyncio.wait_for(seen.closed.wait(), 5)
        return checks, seen, port

    checks, seen, port = run(scenario())
    assert len(checks) == 1  # no {project_id} in the host: one host whatever the ids
    check = checks[0]
    assert (check.host, check.port, check.peer) == ("127.0.0.1", port, f"127.0.0.1:{port}")
    assert check.addresses == ("127.0.0.1",)
    assert 0 <= check.seconds < 5
    assert seen.received == [b""]  # a connection, and not one byte: no HTTP request


def test_preflight_dedupes_hosts() -> None:
    async def scenario() -> tuple[list[HostCheck], Seen]:
        seen = Seen()
        server = await asyncio.start_server(recording_handler(seen), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            template = parse_template(f"http://{{project_id}}:{port}/event")
            ids = ["127.0.0.1"] * 5 + ["localhost", "LOCALHOST"] * 5
            checks = await preflight(template, ids, concurrency=1)
            for _ in range(50):
                if len(seen.received) == 2:
                    break
                await asyncio.sleep(0.05)
        return checks, seen

    checks, seen = run(scenario())
    assert [c.host for c in checks] == ["127.0.0.1", "localhost"]
    assert "127.0.0.1" in checks[1].addresses
    assert seen.received == [b"", b""]


def test_preflight_without_project_ids_checks_nothing() -> None:
    assert run(preflight(parse_template(DEFAULT), [])) == []


def test_refused_port() -> None:
    port = free_port()
    with pytest.raises(UsageError) as info:
        run(preflight(parse_template(f"http://127.0.0.1:{port}/event"), ["1"]))
    message = str(info.value)
    assert info.value.exit_code == 2
    assert f"127.0.0.1:{port}: connection refused" in message
    assert "nothing was sent" in message
    assert f"'http://127.0.0.1:{port}/event'" in message


def test_name_that_does_not_resolve() -> None:
    with pytest.raises(UsageError) as info:
        run(preflight(parse_template("http://nope.invalid/event"), ["1"], connect_timeout=20))
    message = str(info.value)
    assert "nope.invalid: the name does not resolve" in message
    assert "check the host name / the endpoint" in message


def test_every_failure_in_one_message() -> None:
    port = free_port()
    template = parse_template(f"http://{{project_id}}:{port}/event")
    ids = ["127.0.0.1", "nope.invalid", "9" * 64, "127.0.0.1"]
    with pytest.raises(UsageError) as info:
        run(preflight(template, ids, connect_timeout=20))
    message = str(info.value)
    assert "failed for 3 of 3 host(s)" in message
    assert "connection refused" in message
    assert "nope.invalid: the name does not resolve" in message
    assert "at most 63 bytes" in message
    assert message.count("\n  - ") == 3


def test_run_preflight_sync_and_inside_a_loop() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        text = f"http://127.0.0.1:{port}/event"
        # The kernel completes the connection from the backlog: no accept needed to pass.
        checks = run_preflight(text, ["1"])
        assert [c.peer for c in checks] == [f"127.0.0.1:{port}"]

        async def inside_a_loop() -> list[HostCheck]:
            return run_preflight(parse_template(text), ["1"])

        assert len(asyncio.run(inside_a_loop())) == 1
        listener.settimeout(5)
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                assert conn.recv(1024) == b""  # closed without a byte sent

    async def refused_inside_a_loop() -> None:
        run_preflight(f"http://127.0.0.1:{free_port()}/event", ["1"])

    with pytest.raises(UsageError, match="connection refused"):
        asyncio.run(refused_inside_a_loop())


def test_run_preflight_refuses_bad_template() -> None:
    with pytest.raises(UsageError, match="add http:// or https://"):
        run_preflight("localhost:8080/event", ["1"])


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def localhost_cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """A self-signed certificate for DNS name localhost (not for 127.0.0.1), made now."""
    return self_signed_cert(tmp_path_factory.mktemp("tls"), "DNS:localhost")


def server_context(cert: Cert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.cert, cert.key)
    return context


def tls_preflight(
    cert: Cert, host: str, client: ssl.SSLContext | None
) -> tuple[list[HostCheck] | UsageError, Seen]:
    async def scenario() -> tuple[list[HostCheck] | UsageError, Seen]:
        seen = Seen()
        server = await asyncio.start_server(
            recording_handler(seen), "127.0.0.1", 0, ssl=server_context(cert)
        )
        port = server.sockets[0].getsockname()[1]
        async with server:
            template = parse_template(f"https://{host}:{port}/event")
            try:
                result: list[HostCheck] | UsageError = await preflight(
                    template, ["1"], ssl_context=client, connect_timeout=5
                )
            except UsageError as exc:
                result = exc
            else:
                await asyncio.wait_for(seen.closed.wait(), 5)
        return result, seen

    result: tuple[list[HostCheck] | UsageError, Seen] = run(scenario())
    return result


def test_self_signed_certificate_is_refused(localhost_cert: Cert) -> None:
    result, _ = tls_preflight(localhost_cert, "localhost", None)
    assert isinstance(result, UsageError)
    message = str(result)
    assert result.exit_code == 2
    # OpenSSL 3 says "self-signed certificate", 1.1 "self signed certificate".
    assert re.search(r"TLS certificate does not verify: self.signed certificate", message)
    assert "verification cannot be turned off" in message


def test_certificate_from_a_trusted_ca_passes(localhost_cert: Cert) -> None:
    trusting = ssl.create_default_context(cafile=str(localhost_cert.cert))
    result, seen = tls_preflight(localhost_cert, "localhost", trusting)
    assert isinstance(result, list)
    assert [(c.host, c.peer.startswith("127.0.0.1:")) for c in result] == [("localhost", True)]
    assert seen.received == [b""]  # TLS done, then closed: no HTTP request inside it either


def test_host_name_is_verified(localhost_cert: Cert) -> None:
    trusting = ssl.create_default_context(cafile=str(localhost_cert.cert))
    result, _ = tls_preflight(localhost_cert, "127.0.0.1", trusting)
    assert isinstance(result, UsageError)
    assert "TLS certificate does not verify: IP address mismatch" in str(result)


def test_context_that_does_not_verify_is_refused() -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with pytest.raises(UsageError, match="verification cannot be turned off"):
        run(preflight(parse_template("https://localhost:1/event"), ["1"], ssl_context=context))


def test_https_to_a_plain_http_server() -> None:
    async def answer_plainly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        writer.close()
        await writer.wait_closed()

    async def scenario() -> None:
        server = await asyncio.start_server(answer_plainly, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            await preflight(parse_template(f"https://127.0.0.1:{port}/event"), ["1"])

    with pytest.raises(UsageError) as info:
        run(scenario())
    assert "TLS handshake failed" in str(info.value)
    assert "use http://" in str(info.value)


def test_tls_handshake_that_never_answers_times_out() -> None:
    """A loopback server that accepts TCP and never speaks: the handshake times out."""

    async def scenario() -> None:
        seen = Seen()
        server = await asyncio.start_server(recording_handler(seen), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            template = parse_template(f"https://127.0.0.1:{port}/event")
            try:
                await preflight(template, ["1"], connect_timeout=0.3)
            finally:
                await asyncio.wait_for(seen.closed.wait(), 5)

    with pytest.raises(UsageError) as info:
        run(scenario())
    assert "TLS handshake timed out after 0.3s" in str(info.value)


def test_verifying_context() -> None:
    context = verifying_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    try:
        import certifi  # noqa: F401
    except ImportError:
        return
    assert context.get_ca_certs()  # the certifi bundle is loaded
