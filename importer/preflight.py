"""Checks made before the first row is leased or sent.

A wrong endpoint should fail in seconds with exit 2 and a plain message, not be retried as
"transient" for minutes. Two kinds of checks:

* :func:`parse_template` and :func:`check_host` are pure: they refuse endpoint templates and
  host names that can never work (no scheme, a query string, ``{project_id}`` outside the host,
  a DNS label over 63 bytes...).
* :func:`preflight` (and :func:`run_preflight` for synchronous callers) resolves every distinct
  host and opens a TCP connection to it (with a verified TLS handshake for https), then closes
  it. No HTTP request is ever sent: nothing reaches the Event API.

:func:`verifying_context` is the one TLS context: the sender should use it too, so that what
the preflight accepted is what the run will accept. Certificate verification cannot be turned
off.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from importer.errors import UsageError

PLACEHOLDER = "{project_id}"
DEFAULT_PORTS = {"http": 80, "https": 443}
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_CONCURRENCY = 16
MAX_LABEL_BYTES = 63
MAX_HOST_BYTES = 253
# Hosts listed one per line in a failure message; the rest are counted.
MAX_LISTED = 20

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(//)?")
_BRACES = re.compile(r"\{([^{}]*)\}")
_USERINFO = re.compile(r"(://)([^/?#]*)@")
_LABEL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Template:
    """A checked endpoint template such as ``https://{project_id}.log.optimizely.com/event``.

    Attributes:
        scheme: ``"http"`` or ``"https"`` (lower case).
        host_pattern: the host, lower case, with ``{project_id}`` still in it (IPv6 literals
            keep their brackets).
        port: the explicit port, else 80 for http and 443 for https.
        path: the path, ``"/"`` when the template has none.
        text: the template as given (for messages).
    """

    scheme: str
    host_pattern: str
    port: int
    path: str
    text: str = ""

    def host_for(self, project_id: str) -> str:
        """The host a project id produces (not checked: see :func:`check_host`)."""
        return self.host_pattern.replace(PLACEHOLDER, project_id)

    @property
    def per_project(self) -> bool:
        """True when the host depends on the project id."""
        return PLACEHOLDER in self.host_pattern


@dataclass(frozen=True)
class HostCheck:
    """One host that resolved and accepted a connection (and a verified TLS handshake).

    Attributes:
        host: the host name as in the URL.
        port: the port connected to.
        addresses: every address the name resolved to, in resolver order.
        peer: the address the connection was made to.
        seconds: time taken by the resolution and the connection.
    """

    host: str
    port: int
    addresses: tuple[str, ...]
    peer: str
    seconds: float


def _display(template: str) -> str:
    """The template for a message, any password hidden."""

    def hide(match: re.Match[str]) -> str:
        user, colon, _ = match.group(2).partition(":")
        return f"{match.group(1)}{user}{':***' if colon else ''}@"

    return repr(_USERINFO.sub(hide, template))


def _refuse(template: str, problem: str) -> UsageError:
    return UsageError(f"endpoint {_display(template)} {problem}")


def parse_template(template: str) -> Template:
    """Check an endpoint template and split it into its parts.

    ``{project_id}`` may appear only in the host; the template must be a plain http(s) URL
    without query, fragment or user info (the tool adds the query itself).

    Raises:
        UsageError: quoting the template and saying what to change.
    """
    for index, char in enumerate(template):
        if char.isspace() or not char.isprintable():
            raise _refuse(
                template,
                f"contains whitespace or a control character ({char!r} at position {index}): "
                "remove it (spaces in a path must be written %20)",
            )
    if not template:
        raise UsageError(
            "endpoint is empty: give an http(s) URL such as "
            "'https://{project_id}.log.optimizely.com/event'"
        )

    match = _SCHEME.match(template)
    if match is None or not match.group(2):
        if match is not None and match.group(1).lower() in DEFAULT_PORTS:
            scheme = match.group(1).lower()
            raise _refuse(
                template, f"is malformed after '{match.group(0)}': write '{scheme}://host/path'"
            )
        bare = template.lstrip("/")
        host_guess = re.split(r"[:/?#]", bare, maxsplit=1)[0]
        suggestion = ("http://" if is_loopback(host_guess) else "https://") + bare
        raise _refuse(template, f"has no scheme: add http:// or https:// (e.g. {suggestion!r})")
    scheme = match.group(1).lower()
    if scheme not in DEFAULT_PORTS:
        raise _refuse(
            template, f"has scheme '{match.group(1)}': only http:// and https:// are supported"
        )

    rest = template[match.end() :]
    if "?" in rest or "#" in rest:
        raise _refuse(
            template,
            "has a query string or fragment ('?' or '#'): remove it; the tool builds the query "
            "itself from the schema (put {project_id} in the host only)",
        )
    authority, slash, path = rest.partition("/")
    path = slash + path

    for name in _BRACES.findall(template):
        if f"{{{name}}}" != PLACEHOLDER:
            raise _refuse(
                template,
                f"has an unknown placeholder '{{{name}}}': the only placeholder is {PLACEHOLDER}, "
                "replaced by each row's project id",
            )
    if "{" in _BRACES.sub("", template) or "}" in _BRACES.sub("", template):
        raise _refuse(
            template,
            f"has an unmatched '{{' or '}}': the only placeholder is {PLACEHOLDER}",
        )

    userinfo, at, hostport = authority.rpartition("@")
    if not at:
        hostport = authority
    for part, where in ((path, "the path"), (userinfo, "the user info")):
        if PLACEHOLDER in part:
            raise _refuse(
                template,
                f"has {PLACEHOLDER} in {where}: it may appear only in the host name, "
                "e.g. 'https://{project_id}.log.optimizely.com/event'",
            )
    if at:
        raise _refuse(
            template,
            "has user info ('user:password@'): remove it; credentials in the URL are not supported",
        )

    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise _refuse(template, "has an IPv6 address without its closing ']'")
        host, after = hostport[: close + 1], hostport[close + 1 :]
        if after and not after.startswith(":"):
            raise _refuse(template, f"has {after!r} after the IPv6 address: expected ':port'")
        port_text: str | None = after[1:] if after else None
    elif hostport.count(":") > 1:
        raise _refuse(
            template, "has an IPv6 address without brackets: write it as http://[::1]:8080/..."
        )
    else:
        host, colon, port_text_raw = hostport.partition(":")
        port_text = port_text_raw if colon else None

    if port_text is not None and PLACEHOLDER in port_text:
        raise _refuse(
            template,
            f"has {PLACEHOLDER} in the port: it may appear only in the host name, "
            "e.g. 'https://{project_id}.log.optimizely.com/event'",
        )
    if not host:
        raise _refuse(template, "has no host: write scheme://host/path, e.g. 'https://host/event'")

    host = host.lower()
    _check_host_pattern(template, host)

    if port_text is None:
        port = DEFAULT_PORTS[scheme]
    elif not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise _refuse(
            template,
            f"has port {port_text!r}: a port is a number from 1 to 65535 "
            f"(or leave it out for the default, {DEFAULT_PORTS[scheme]})",
        )
    else:
        port = int(port_text)

    return Template(scheme=scheme, host_pattern=host, port=port, path=path or "/", text=template)


def _check_host_pattern(template: str, host: str) -> None:
    """What can be checked of a host before a project id fills it in."""
    if host.startswith("["):
        if PLACEHOLDER in host:
            raise _refuse(
                template, f"has {PLACEHOLDER} inside an IPv6 address: put it in a host name"
            )
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _refuse(template, f"has {host!r}, which is not a valid IPv6 address") from None
        return
    if not host.isascii():
        raise _refuse(
            template,
            "has a non-ASCII host name: write it in its ASCII (punycode, 'xn--...') form",
        )
    labels = host.removesuffix(".").split(".")
    for label in labels:
        bare = label.replace(PLACEHOLDER, "")
        if not label:
            raise _refuse(
                template, "has an empty label in its host name (two dots, or a leading dot)"
            )
        if bare and not _LABEL.fullmatch(bare):
            bad = next(c for c in bare if not _LABEL.fullmatch(c))
            raise _refuse(
                template,
                f"has {bad!r} in its host name: a host name holds letters, digits, '-' and '.'",
            )
        if PLACEHOLDER not in label and len(label) > MAX_LABEL_BYTES:
            raise _refuse(
                template,
                f"has a host label of {len(label)} bytes ({label[:20]}...): "
                f"DNS allows at most {MAX_LABEL_BYTES} bytes between dots",
            )


def _bare(host: str) -> str:
    """The host without IPv6 brackets or a final dot: what the resolver and TLS want."""
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(_bare(host))
    except ValueError:
        return None


def check_host(host: str) -> None:
    """Refuse a host name DNS cannot hold: labels over 63 bytes, names over 253 bytes.

    IP addresses (IPv6 with or without brackets) pass as they are.

    Raises:
        UsageError: naming the host and the limit it breaks.
    """
    if _ip(host) is not None:
        return
    name = host.removesuffix(".")
    size = len(name.encode("utf-8"))
    if not name:
        raise UsageError(f"host {host!r} is empty: check the endpoint and the project id")
    if size > MAX_HOST_BYTES:
        raise UsageError(
            f"host {host!r} is {size} bytes long: a DNS name holds at most {MAX_HOST_BYTES} "
            "bytes; check the project id and the endpoint"
        )
    for label in name.split("."):
        label_size = len(label.encode("utf-8"))
        if not label:
            raise UsageError(
                f"host {host!r} has an empty label (two dots in a row): check the project id "
                "and the endpoint"
            )
        if label_size > MAX_LABEL_BYTES:
            raise UsageError(
                f"host {host!r} has a label of {label_size} bytes ({label[:16]}...): a DNS "
                f"label (the part between dots) holds at most {MAX_LABEL_BYTES} bytes; "
                "check the project id"
            )
        if not _LABEL.fullmatch(label):
            raise UsageError(
                f"host {host!r} has a label {label!r} with characters a host name cannot "
                "hold (letters, digits and '-' only): check the project id"
            )


def is_loopback(host: str) -> bool:
    """True for ``localhost``, ``*.localhost``, 127.0.0.0/8 and ``::1``. Pure: no DNS."""
    name = _bare(host.strip()).lower().removesuffix(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address = _ip(name)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address is not None and address.is_loopback


def certifi_cafile() -> str | None:
    try:
        module = importlib.import_module("certifi")
    except ImportError:
        return None
    return str(module.where())


def verifying_context() -> ssl.SSLContext:
    """The TLS context for the Event API: certificates and host names always verified.

    Trusts the system CA store and, when the ``certifi`` package is installed, its CA bundle
    too (a fresh machine or container may have no system store).
    """
    context = ssl.create_default_context()
    cafile = certifi_cafile()
    if cafile is not None:
        context.load_verify_locations(cafile=cafile)
    return context


# What went wrong with one address (or the name), most telling first when several differ.
_KINDS = ("invalid", "dns", "tls-verify", "tls", "tls-timeout", "timeout", "refused", "other")


@dataclass(frozen=True)
class _Failure:
    kind: str
    detail: str
    address: str = ""


def _format_address(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _explain(host: str, port: int, failures: list[_Failure], timeout: float) -> str:
    """One line of the final message for one host."""
    where = f"{host}:{port}"
    first = min(failures, key=lambda f: _KINDS.index(f.kind))
    if first.kind == "invalid":
        return first.detail
    if first.kind == "dns":
        return (
            f"{host}: the name does not resolve ({first.detail}); check the host name / the "
            "endpoint (and that this machine can resolve names)"
        )
    addresses = ", ".join(f.address for f in failures if f.kind == first.kind)
    at = "" if addresses == where else f" (at {addresses})"
    others = "; ".join(
        f"{f.address}: {f.detail}" for f in failures if f.kind != first.kind and f.address
    )
    also = f" (also {others})" if others else ""
    if first.kind == "tls-verify":
        reason = (
            f"TLS certificate does not verify: {first.detail}{at}; the server must "
            f"present a certificate for {_bare(host)} signed by a trusted CA; verification "
            "cannot be turned off"
        )
    elif first.kind == "tls":
        reason = (
            f"TLS handshake failed: {first.detail}{at}; is this port serving "
            "https? If the server speaks plain HTTP, use http://"
        )
    elif first.kind == "tls-timeout":
        reason = (
            f"TLS handshake timed out after {timeout:g}s{at}; is this port "
            "serving https? If the server speaks plain HTTP, use http://"
        )
    elif first.kind == "timeout":
        reason = (
            f"connection timed out after {timeout:g}s{at}; check the host and "
            "port, and that no firewall or proxy is in the way"
        )
    elif first.kind == "refused":
        reason = (
            f"connection refused{at}; nothing listens on port {port}: check the "
            "port in the endpoint and that the server is running"
        )
    else:
        reason = f"cannot connect: {first.detail}{at}; check the endpoint"
    return f"{where}: {reason}{also}"


def _down(failures: list[_Failure]) -> bool:
    """Whether a host's failures only say "not answering now" (not a wrong endpoint)."""
    return all(f.kind in ("refused", "timeout", "other") for f in failures)


async def _close(writer: asyncio.StreamWriter, wait: float) -> None:
    writer.close()
    try:
        async with asyncio.timeout(wait):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        writer.transport.abort()


async def _attempt(
    address: str, port: int, host: str, context: ssl.SSLContext | None, wait: float
) -> str | _Failure:
    """Connect to one address (and shake hands over TLS); the peer, or what went wrong."""
    shown = _format_address(address, port)
    try:
        async with asyncio.timeout(wait):
            _, writer = await asyncio.open_connection(address, port)
    except TimeoutError:
        return _Failure("timeout", "timed out", shown)
    except ConnectionRefusedError:
        return _Failure("refused", "connection refused", shown)
    except OSError as exc:
        return _Failure("other", exc.strerror or str(exc), shown)
    try:
        if context is not None:
            async with asyncio.timeout(wait):
                await writer.start_tls(context, server_hostname=_bare(host))
    except TimeoutError:
        writer.transport.abort()
        return _Failure("tls-timeout", "TLS handshake timed out", shown)
    except ssl.SSLCertVerificationError as exc:
        writer.transport.abort()
        detail = str(exc.verify_message or exc.reason or exc).rstrip(".")
        return _Failure("tls-verify", detail, shown)
    except ssl.SSLError as exc:
        writer.transport.abort()
        reason = exc.reason.replace("_", " ").lower() if exc.reason else str(exc)
        return _Failure("tls", reason, shown)
    except (OSError, EOFError) as exc:
        writer.transport.abort()
        detail = "the server closed the connection during the handshake"
        if isinstance(exc, OSError) and exc.strerror:
            detail = exc.strerror
        return _Failure("tls", detail, shown)
    await _close(writer, wait)
    return shown


async def _check_one(
    host: str, port: int, context: ssl.SSLContext | None, wait: float
) -> HostCheck | list[_Failure]:
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(wait):
            infos = await loop.getaddrinfo(
                _bare(host), port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
    except TimeoutError:
        return [_Failure("dns", f"no answer within {wait:g}s")]
    except (socket.gaierror, UnicodeError) as exc:
        detail = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
        return [_Failure("dns", detail)]
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        return [_Failure("dns", "no addresses")]
    failures: list[_Failure] = []
    for address in addresses:
        outcome = await _attempt(address, port, host, context, wait)
        if isinstance(outcome, str):
            seconds = time.perf_counter() - started
            return HostCheck(host, port, addresses, outcome, seconds)
        failures.append(outcome)
    return failures


async def preflight(
    template: Template,
    project_ids: Iterable[str],
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_unreachable: Callable[[str], None] | None = None,
) -> list[HostCheck]:
    """Resolve and connect to every distinct host the template and project ids produce.

    Each host is resolved, connected to on the template's port (with a verified TLS handshake
    for https) and the connection closed; no HTTP request is sent. A template without
    ``{project_id}`` checks its one host whatever the project ids.

    Args:
        template: from :func:`parse_template`.
        project_ids: the project ids of the run (duplicates are fine).
        connect_timeout: seconds for each of name resolution, TCP connection, TLS handshake.
        ssl_context: for https; :func:`verifying_context` when None. It must verify.
        concurrency: hosts checked at a time.
        on_unreachable: when given, a host that resolves but refuses or does not answer the
            connection (a server that is down, perhaps briefly) is told to it instead of
            failing the check: sending then retries it like any outage. A name that does
            not resolve, a certificate that does not verify or a port that does not speak
            TLS always fail.

    Returns:
        One :class:`HostCheck` per distinct host, in first-seen order.

    Raises:
        UsageError: listing every host that failed and why.
    """
    if template.per_project:
        hosts = list(dict.fromkeys(template.host_for(p).lower() for p in project_ids))
    else:
        hosts = [template.host_pattern]
    context: ssl.SSLContext | None = None
    if template.scheme == "https":
        context = ssl_context if ssl_context is not None else verifying_context()
        if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
            raise UsageError(
                "the TLS context does not verify certificates and host names: certificate "
                "verification cannot be turned off"
            )

    problems: dict[str, list[_Failure]] = {}
    to_check: list[str] = []
    for host in hosts:
        try:
            check_host(host)
        except UsageError as exc:
            problems[host] = [_Failure("invalid", str(exc))]
        else:
            to_check.append(host)

    limit = asyncio.Semaphore(max(1, concurrency))

    async def limited(host: str) -> HostCheck | list[_Failure]:
        async with limit:
            return await _check_one(host, template.port, context, connect_timeout)

    outcomes = await asyncio.gather(*(limited(host) for host in to_check))
    checks: list[HostCheck] = []
    for host, outcome in zip(to_check, outcomes, strict=True):
        if isinstance(outcome, HostCheck):
            checks.append(outcome)
        else:
            problems[host] = outcome
    if on_unreachable is not None:
        for host in [h for h, found in problems.items() if _down(found)]:
            on_unreachable(_explain(host, template.port, problems.pop(host), connect_timeout))
    if problems:
        lines = [
            _explain(host, template.port, problems[host], connect_timeout)
            for host in hosts
            if host in problems
        ]
        if len(lines) > MAX_LISTED:
            lines = [*lines[:MAX_LISTED], f"... and {len(lines) - MAX_LISTED} more"]
        shown = _display(template.text) if template.text else repr(template.host_pattern)
        raise UsageError(
            f"endpoint check failed for {len(problems)} of {len(hosts)} host(s) of {shown}; "
            "nothing was sent:\n  - " + "\n  - ".join(lines)
        )
    return checks


def run_preflight(
    template: Template | str,
    project_ids: Iterable[str],
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> list[HostCheck]:
    """:func:`preflight` for synchronous callers such as the CLI.

    A template given as text is parsed first. Called while an event loop runs in this thread
    (a notebook), the check runs in a worker thread with its own loop.
    """
    parsed = parse_template(template) if isinstance(template, str) else template
    ids = list(project_ids)

    def run() -> list[HostCheck]:
        return asyncio.run(
            preflight(
                parsed,
                ids,
                connect_timeout=connect_timeout,
                ssl_context=ssl_context,
                concurrency=concurrency,
            )
        )

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()
