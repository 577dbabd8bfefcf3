"""Nothing sent to production by accident, nothing wrong retried for minutes, nothing silent.

Real processes, real servers on loopback; the production gate is tested with the real default
endpoint inside a private network namespace where its name resolves to a counting server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from aiohttp import web

from .helpers import (
    SALES_SCHEMA,
    CollectorProcess,
    Server,
    cli,
    free_port,
    schema_toml,
    send_args,
    start_cli,
    write_sales,
)

ROOT = Path(__file__).resolve().parent.parent


def production_schema(tmp_path: Path) -> Path:
    """The sales schema with the default (production) endpoint."""
    return schema_toml(tmp_path / "schema.toml", SALES_SCHEMA)


def test_endpoint_without_scheme_exits_2_at_once(tmp_path: Path) -> None:
    data = write_sales(tmp_path / "s.csv", 0, 5)
    started = time.monotonic()
    result = cli(
        "send",
        str(data),
        "-s",
        str(production_schema(tmp_path)),
        "--endpoint",
        "127.0.0.1:8765/event",
        "-q",
    )
    assert result.returncode == 2
    assert "has no scheme: add http:// or https://" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30  # not retried as "transient" for minutes


def test_endpoint_with_a_query_exits_2(tmp_path: Path) -> None:
    data = write_sales(tmp_path / "s.csv", 0, 5)
    result = cli(
        "check",
        str(data),
        "-s",
        str(production_schema(tmp_path)),
        "--endpoint",
        "http://127.0.0.1:9/event?p={project_id}",
        "-q",
    )
    assert result.returncode == 2 and "query string" in result.stderr


def test_a_name_that_does_not_resolve_exits_2_with_nothing_leased(tmp_path: Path) -> None:
    data = write_sales(tmp_path / "s.csv", 0, 5)
    ledger = tmp_path / "l.sqlite"
    result = cli(
        "send",
        str(data),
        "-s",
        str(production_schema(tmp_path)),
        "--endpoint",
        "http://nope.invalid/event",
        "--yes",
        "-q",
        "--ledger",
        str(ledger),
    )
    assert result.returncode == 2, result.stderr
    assert "nope.invalid: the name does not resolve" in result.stderr
    assert not ledger.exists()  # refused before the ledger was opened: nothing leased


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (cert, key)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_a_certificate_that_does_not_verify_exits_2(
    tmp_path: Path, self_signed: tuple[Path, Path]
) -> None:
    server = Server(ssl_files=self_signed)
    try:
        data = write_sales(tmp_path / "s.csv", 0, 5)
        result = cli(
            "send",
            str(data),
            "-s",
            str(production_schema(tmp_path)),
            "--endpoint",
            f"https://localhost:{server.port}/event",
            "-q",
            "--ledger",
            str(tmp_path / "l.sqlite"),
        )
    finally:
        server.close()
    assert result.returncode == 2, result.stderr
    assert "TLS certificate does not verify" in result.stderr
    assert "cannot be turned off" in result.stderr
    assert server.requests == 0


def test_a_redirect_is_a_permanent_failure_showing_where_it_points(tmp_path: Path) -> None:
    async def moved(request: web.Request) -> web.StreamResponse:
        return web.Response(status=301, headers={"Location": "https://elsewhere.example/event"})

    server = Server(moved)
    try:
        data = write_sales(tmp_path / "s.csv", 0, 3)
        result = cli(
            *send_args(
                data,
                production_schema(tmp_path),
                f"http://127.0.0.1:{server.port}/event",
                tmp_path / "l.sqlite",
            )
        )
    finally:
        server.close()
    assert result.returncode == 4, result.stderr
    report = json.loads(result.stdout)
    assert report["failed"] == 3 and server.requests == 3  # one attempt each, not followed
    out = tmp_path / "failures.csv"
    assert (
        cli("failures", "export", str(out), "--ledger", str(tmp_path / "l.sqlite")).returncode == 0
    )
    assert "redirect to https://elsewhere.example/event not followed" in out.read_text()


def test_exit_4_wins_over_3(tmp_path: Path, write_csv) -> None:  # type: ignore[no-untyped-def]
    """A rejected row (3) and a row failing permanently (4): the run exits 4."""
    data = write_sales(tmp_path / "s.csv", 0, 20)
    lines = data.read_text().splitlines()
    lines[5] = lines[5].replace(",purchase,", ",,")  # an empty event name: rejected
    data.write_text("\n".join(lines) + "\n")
    with CollectorProcess(tmp_path / "r.ndjson", "--bad-request-match", "u=user-9&") as collector:
        result = cli(
            *send_args(data, production_schema(tmp_path), collector.url, tmp_path / "l.sqlite")
        )
    report = json.loads(result.stdout)
    assert (report["rejected"], report["failed"]) == (1, 1)
    assert result.returncode == 4
    again = cli(*send_args(data, production_schema(tmp_path), collector.url, tmp_path / "l.sqlite"))
    assert again.returncode == 4  # the run still holds the failed row
    assert "event-backfill retry --ledger" in again.stderr


@pytest.mark.parametrize("option", ["--rejects", "--rejects-rows"])
def test_an_output_in_a_missing_folder_exits_2_before_any_work(tmp_path: Path, option: str) -> None:
    data = write_sales(tmp_path / "s.csv", 0, 5)
    missing = tmp_path / "no-such-dir" / "out.csv"
    result = cli("check", str(data), "-s", str(production_schema(tmp_path)), option, str(missing))
    assert result.returncode == 2
    assert f"the folder {missing.parent} does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert not missing.parent.exists()  # a mistyped folder is not created


def test_preview_out_and_failures_export_check_their_paths(tmp_path: Path) -> None:
    data = write_sales(tmp_path / "s.csv", 0, 5)
    missing = tmp_path / "nope" / "urls.txt"
    preview = cli(
        "preview", str(data), "-s", str(production_schema(tmp_path)), "--out", str(missing)
    )
    assert preview.returncode == 2 and "does not exist" in preview.stderr
    ledger = tmp_path / "l.sqlite"
    with CollectorProcess(tmp_path / "r.ndjson") as collector:
        cli(
            "send",
            str(data),
            "-s",
            str(production_schema(tmp_path)),
            "--endpoint",
            collector.url,
            "-q",
            "--ledger",
            str(ledger),
        )
    export = cli("failures", "export", str(tmp_path), "--ledger", str(ledger))
    assert export.returncode == 2 and "is a directory" in export.stderr


def test_the_default_ledger_is_found_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --ledger, no variable: the user's data directory; the same file never goes twice."""
    monkeypatch.delenv("EVENT_BACKFILL_LEDGER")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    data = write_sales(tmp_path / "s.csv", 0, 30)
    schema = production_schema(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with CollectorProcess(tmp_path / "r.ndjson") as collector:
        first = cli(
            "send",
            str(data),
            "-s",
            str(schema),
            "--endpoint",
            collector.url,
            "-q",
            "--json",
            cwd=tmp_path / "a",
        )
        copy = tmp_path / "b" / "renamed.csv"
        copy.write_bytes(data.read_bytes())  # the same content elsewhere, under another name
        second = cli(
            "send",
            "renamed.csv",
            "-s",
            str(schema),
            "--endpoint",
            collector.url,
            "-q",
            "--json",
            cwd=tmp_path / "b",
        )
        received = sum(collector.accepted().values())
    assert json.loads(first.stdout)["sent"] == 30
    report = json.loads(second.stdout)
    assert report["sent"] == 0 and report["skipped_done"] == 30
    assert received == 30
    expected = tmp_path / "data" / "event-backfill" / "ledger.sqlite"
    assert report["ledger"]["path"] == str(expected)
    assert f"ledger: {expected}" in second.stderr


@pytest.mark.slow
def test_without_a_terminal_status_lines_outage_events_and_a_log(tmp_path: Path) -> None:
    """stderr not a terminal: periodic status lines, outage/recover lines, a JSON log."""
    data = write_sales(tmp_path / "s.csv", 0, 600)
    port = free_port()
    log = tmp_path / "run.log"
    collector = CollectorProcess(tmp_path / "r.ndjson", port=port)
    process = start_cli(
        "send",
        str(data),
        "-s",
        str(production_schema(tmp_path)),
        "--endpoint",
        f"http://127.0.0.1:{port}/event",
        "--rate",
        "40",
        "--status-interval",
        "1",
        "--log-file",
        str(log),
        "--json",
        "--ledger",
        str(tmp_path / "l.sqlite"),
    )
    try:
        time.sleep(2)
        collector.stop()
        time.sleep(13)  # longer than the 10 s after which the endpoint counts as down
        collector = CollectorProcess(tmp_path / "r.ndjson", port=port)
        _, err = process.communicate(timeout=120)
    finally:
        collector.stop()
    assert process.returncode == 0, err
    assert "rows settled (sent " in err and "rows/s" in err
    assert "the endpoint is not answering" in err and "answers again after" in err
    assert "last error: cannot connect" in err
    events = [json.loads(line) for line in log.read_text().splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "start" and names[-1] == "finish"
    assert "outage" in names and "recover" in names
    assert names.index("outage") < names.index("recover")
    assert events[-1]["sent"] == 600 and events[-1]["exit_code"] == 0


NAMESPACE_SCRIPT = textwrap.dedent(
    """
    set -e
    mount --bind "$HOSTS" /etc/hosts
    ip link set lo up
    "$PYTHON" "$COUNTER" "$COUNTS" &
    counter=$!
    sleep 1
    set +e
    "$PYTHON" -m importer send "$DATA" -s "$SCHEMA" -q --ledger "$LEDGER" $YES > "$OUT" 2> "$ERR"
    echo $? > "$RC"
    kill $counter
    """
)

COUNTER = textwrap.dedent(
    """
    import socket, sys
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 443))
    listener.listen(64)
    count = 0
    while True:
        connection, _ = listener.accept()
        count += 1
        open(sys.argv[1], "w").write(str(count))
        connection.close()
    """
)


@pytest.mark.parametrize("yes", [False, True])
def test_the_production_gate_with_the_real_default_endpoint(tmp_path: Path, yes: bool) -> None:
    """Without a terminal and without --yes: exit 2, banner, and not one connection attempt.

    Runs inside a private network namespace where 1234567.log.optimizely.com resolves to a
    counting TCP listener on 127.0.0.1:443, so nothing can leave the machine either way.
    """
    if sys.platform != "linux" or shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs Linux, unshare and root for a private network namespace")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.1 1234567.log.optimizely.com\n")
    counter = tmp_path / "counter.py"
    counter.write_text(COUNTER)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HOSTS": str(hosts),
        "PYTHON": sys.executable,
        "COUNTER": str(counter),
        "COUNTS": str(tmp_path / "counts"),
        "DATA": str(write_sales(tmp_path / "s.csv", 0, 10)),
        "SCHEMA": str(production_schema(tmp_path)),
        "LEDGER": str(tmp_path / "l.sqlite"),
        "YES": "--yes" if yes else "",
        "OUT": str(tmp_path / "out"),
        "ERR": str(tmp_path / "err"),
        "RC": str(tmp_path / "rc"),
    }
    probe = subprocess.run(["unshare", "-m", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare is not permitted here: {probe.stderr.decode().strip()}")
    subprocess.run(
        ["unshare", "-m", "-n", "sh", "-c", NAMESPACE_SCRIPT],
        env=env,
        check=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    err = (tmp_path / "err").read_text()
    counts = tmp_path / "counts"
    connections = int(counts.read_text()) if counts.exists() else 0
    if not yes:
        assert "about to SEND TO A REAL ENDPOINT (not loopback)" in err
        assert "hosts: 1234567.log.optimizely.com" in err
        assert "rows to send: 10 of 10" in err
        assert (tmp_path / "rc").read_text().strip() == "2"
        assert "not a terminal, so nobody can confirm: nothing was sent. Pass --yes" in err
        assert connections == 0
        assert not (tmp_path / "l.sqlite").exists()
    else:
        # With --yes it goes ahead: the preflight connects (and the listener is no TLS server,
        # so it stops there with exit 2, nothing sent).
        assert connections >= 1
        assert "TLS" in err


def test_version() -> None:
    from importer._version import __version__

    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"event-backfill {__version__}"
