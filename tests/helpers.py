"""Helpers for end-to-end tests: generated sales files, a collector process, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from .conftest import BASE_SCHEMA, NOW

SALES_HEADER = "order_id,user,event,exp,var,goals,amount,ts"
# The base schema with epoch-second times, no segment, and the order id as dedupe key.
SALES_SCHEMA: dict[str, Any] = {
    **{key: spec for key, spec in BASE_SCHEMA.items() if key != "segments"},
    "time": {"column": "ts"},
    "dedupe_key": ["order_id"],
}


def sales_rows(start: int, count: int) -> list[str]:
    """CSV lines of distinct orders (each makes a distinct query)."""
    return [
        f"ORD-{i:07d},user-{i},{'purchase' if i % 3 else 'refund_request'},87654321,"
        f"{1111111 + i % 2},1234567,{(i % 997) + 1}.{i % 100:02d},{NOW - 86_400 - i}"
        for i in range(start, start + count)
    ]


def write_sales(path: Path, start: int, count: int) -> Path:
    """A sales CSV of ``count`` orders numbered from ``start``."""
    path.write_text("\n".join([SALES_HEADER, *sales_rows(start, count)]) + "\n")
    return path


def schema_toml_text(schema: dict[str, Any]) -> str:
    """A schema dict as TOML (tables of scalars, arrays of tables, top-level lists)."""
    lines: list[str] = []
    for key, value in schema.items():
        plain_list = isinstance(value, list) and value and not isinstance(value[0], dict)
        if isinstance(value, str | int) or plain_list:
            lines.append(f"{key} = {json.dumps(value)}")
    for key, value in schema.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines.append(f"[[{key}]]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def schema_toml(path: Path, schema: dict[str, Any] = SALES_SCHEMA) -> Path:
    """Write a schema dict as a TOML file."""
    path.write_text(schema_toml_text(schema))
    return path


def send_args(data: Path, schema: Path, url: str, ledger: Path, *extra: str) -> list[str]:
    """``send DATA -s SCHEMA --endpoint URL --ledger LEDGER -q --json`` plus options."""
    return [
        "send",
        str(data),
        "-s",
        str(schema),
        "--endpoint",
        url,
        "--ledger",
        str(ledger),
        "-q",
        "--json",
        *extra,
    ]


def reported_unknown(stderr: str) -> int:
    """The unknown count a run announced when it resumed (0 if it did not)."""
    found = re.search(r"resumed: [\d,]+ already sent, ([\d,]+) unknown", stderr)
    return int(found.group(1).replace(",", "")) if found else 0


def cli(
    *args: str, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m importer ARGS`` to the end."""
    return subprocess.run(
        [sys.executable, "-m", "importer", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=_env(),
    )


def start_cli(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start ``python -m importer ARGS`` without waiting."""
    return subprocess.Popen(
        [sys.executable, "-m", "importer", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=_env(),
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return env


class CollectorProcess:
    """``event-backfill collector`` in its own process on a free loopback port."""

    def __init__(self, record: Path, *options: str, port: int = 0) -> None:
        self.record = record
        self.process = start_cli(
            "collector", "--port", str(port), "--record", str(record), *options
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+/event)", line)
        if not found:
            self.process.kill()
            raise RuntimeError(f"collector did not start: {line!r} {self.process.stderr.read()!r}")  # type: ignore[union-attr]
        self.url = found.group(1)

    def records(self) -> list[dict[str, Any]]:
        """Every request recorded so far (a line still being written is left for later)."""
        if not self.record.exists():
            return []
        text = self.record.read_text()
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def accepted(self) -> Counter[str]:
        """How many times each query was answered 200."""
        return Counter(r["query"] for r in self.records() if r["status"] == 200)

    def stop(self) -> None:
        """Stop the process."""
        self.process.terminate()
        try:
            self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()

    def __enter__(self) -> CollectorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    """Poll until predicate() is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


def order_of(query: str) -> str:
    """The order a sales query belongs to (user-N <-> ORD-N)."""
    found = re.search(r"u=user-(\d+)", query)
    assert found, query
    return found.group(1)


class Server:
    """A real HTTP(S) server on loopback in a thread, counting connections and requests."""

    def __init__(
        self, handler: web.RequestHandler | None = None, ssl_files: tuple[Path, Path] | None = None
    ) -> None:
        import ssl

        self.requests = 0
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        context = None
        if ssl_files:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(ssl_files[0]), str(ssl_files[1]))

        async def count(request: web.Request) -> web.StreamResponse:
            self.requests += 1
            if handler is not None:
                return await handler(request)
            return web.Response(text="ok")

        async def start() -> int:
            app = web.Application()
            app.router.add_get("/event", count)
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=context)
            await site.start()
            server = site._server
            assert server is not None
            original = server._protocol_factory  # type: ignore[attr-defined]

            def counted() -> object:
                self.connections += 1
                return original()

            server._protocol_factory = counted  # type: ignore[attr-defined]
            return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass(frozen=True)
class Cert:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


def self_signed_cert(folder: Path, alt_names: str) -> Cert:
    """A self-signed certificate for CN=localhost and ``alt_names`` (``subjectAltName``
    syntax), made now with the openssl binary (pytest.skip when it is not installed)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", f"subjectAltName={alt_names}"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return Cert(cert, key)
