"""Defects an adversarial pass found in the ledger and the sender, each reproduced first.

Real processes, real files, real servers on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from .helpers import (
    CollectorProcess,
    Server,
    cli,
    order_of,
    reported_unknown,
    schema_toml,
    send_args,
    start_cli,
    wait_for,
    write_sales,
)


@pytest.mark.slow
@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_second_path_to_the_ledger_is_locked_too(tmp_path: Path, link: str) -> None:
    """Through a symbolic or a hard link, a second run finds the ledger in use (exit 1)."""
    data = write_sales(tmp_path / "s.csv", 0, 4_000)
    schema = schema_toml(tmp_path / "schema.toml")
    ledger = tmp_path / "ledger.sqlite"
    other = tmp_path / "elsewhere.sqlite"
    with CollectorProcess(tmp_path / "r.ndjson") as collector:
        first = start_cli(*send_args(data, schema, collector.url, ledger, "--rate", "500"))
        wait_for(lambda: sum(collector.accepted().values()) > 0)
        if link == "symlink":
            other.symlink_to(ledger)
        else:
            os.link(ledger, other)
        second = cli(*send_args(data, schema, collector.url, other))
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
        received = collector.accepted()
    assert second.returncode == 1, second.stderr
    assert "is in use by another event-backfill process" in second.stderr
    assert max(received.values()) == 1  # no row sent by both


@pytest.mark.slow
def test_unknown_rows_stay_unknown_across_a_second_crash(tmp_path: Path) -> None:
    """kill -9 while sending; resume and kill -9 again before it re-sends; then --unknown
    skip: nothing that may have arrived before is sent again (skip never duplicates)."""
    data = write_sales(tmp_path / "s.csv", 0, 20_000)
    schema = schema_toml(tmp_path / "schema.toml")
    ledger = tmp_path / "ledger.sqlite"
    with CollectorProcess(tmp_path / "r.ndjson") as collector:
        args = send_args(data, schema, collector.url, ledger, "--rate", "2000")
        first = start_cli(*args)
        wait_for(lambda: sum(collector.accepted().values()) > 2_000)
        first.send_signal(signal.SIGKILL)
        first.communicate()
        second = start_cli(*args)
        assert second.stderr is not None
        said = ""
        while "resumed:" not in said:  # the ledger is open and the resend policy applied
            said += second.stderr.readline()
        second.send_signal(signal.SIGKILL)
        second.communicate()
        assert reported_unknown(said) > 0
        before = set(collector.accepted())
        third = cli(*args, "--unknown", "skip")
        after = collector.accepted()
    assert third.returncode == 0, third.stderr
    sent_by_third = set(after) - before | {q for q in before if after[q] > 1}
    twice = [q for q in sent_by_third if q in before]
    assert twice == []  # skip never sends what may have arrived
    missing = 20_000 - len({order_of(q) for q in after})
    assert missing <= reported_unknown(third.stderr)


class SlowBody:
    """Answers 200 with its headers at once, then the body one byte per second."""

    def __init__(self) -> None:
        self.arrivals: Counter[str] = Counter()

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.arrivals[request.query_string] += 1
        response = web.StreamResponse(status=200, headers={"Content-Length": "100"})
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"o")
            await asyncio.sleep(1)
        return response


@pytest.mark.slow
def test_a_slow_response_keeps_the_duplicate_bound(tmp_path: Path) -> None:
    """Body at 1 byte/s, --timeout 3 --max-attempts 2: at most 2 requests per row, and the
    report's bound counts every request that may have arrived twice."""
    data = write_sales(tmp_path / "s.csv", 0, 20)
    schema = schema_toml(tmp_path / "schema.toml")
    slow = SlowBody()
    server = Server(slow)
    try:
        result = cli(
            *send_args(
                data,
                schema,
                f"http://127.0.0.1:{server.port}/event",
                tmp_path / "l.sqlite",
                "--timeout",
                "3",
                "--max-attempts",
                "2",
                "--give-up-after",
                "60",
            ),
            timeout=120,
        )
    finally:
        server.close()
    report = json.loads(result.stdout)
    assert result.returncode == 1, result.stderr  # rows left unknown, not failed
    assert max(slow.arrivals.values()) <= 2  # attempts capped by --max-attempts
    extra = sum(slow.arrivals.values()) - len(slow.arrivals)
    assert extra <= report["maybe_twice"]  # the printed bound covers every extra arrival
    assert report["failed"] == 0 and report["pending"] == 20 and report["unknown"] == 20
    assert "may have arrived twice" in " ".join(report["notes"])


def test_a_damaged_ledger_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    data = write_sales(tmp_path / "s.csv", 0, 5)
    schema = schema_toml(tmp_path / "schema.toml")
    ledger = tmp_path / "ledger.sqlite"
    with CollectorProcess(tmp_path / "r.ndjson") as collector:
        assert cli(*send_args(data, schema, collector.url, ledger)).returncode == 0
        raw = ledger.read_bytes()
        ledger.write_bytes(raw[:100] + os.urandom(len(raw) - 100))  # pages garbled
        for path in (ledger.with_name("ledger.sqlite-wal"), ledger.with_name("ledger.sqlite-shm")):
            path.unlink(missing_ok=True)
        sent = cli(*send_args(data, schema, collector.url, ledger))
    status = cli("status", "--ledger", str(ledger))
    for result in (sent, status):
        assert result.returncode == 2, result.stderr
        assert f"{ledger} is damaged or not a ledger" in result.stderr
        assert "Move it aside" in result.stderr and "Traceback" not in result.stderr


def test_a_file_that_is_not_sqlite_as_ledger(tmp_path: Path) -> None:
    ledger = tmp_path / "notes.txt"
    ledger.write_text("these are my notes, not a ledger\n" * 200)
    result = cli("status", "--ledger", str(ledger))
    assert result.returncode == 2 and "is damaged or not a ledger" in result.stderr


@pytest.mark.slow
def test_a_full_disk_stops_the_run_within_seconds(tmp_path: Path) -> None:
    """A ledger on a small, full tmpfs: exit 1 soon, naming the ledger and the free space."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        data = write_sales(tmp_path / "s.csv", 0, 60_000)
        schema = schema_toml(tmp_path / "schema.toml")  # with a dedupe key: the ledger grows
        filler = mount / "filler"
        filler.write_bytes(b"\0" * (2 * 1024 * 1024 - 160 * 1024))
        ledger = mount / "ledger.sqlite"
        with CollectorProcess(tmp_path / "r.ndjson") as collector:
            started = time.monotonic()
            result = cli(*send_args(data, schema, collector.url, ledger), timeout=300)
            took = time.monotonic() - started
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert str(ledger) in result.stderr and "full" in result.stderr
    assert "MB free there" in result.stderr and "Traceback" not in result.stderr
    assert took < 120


def test_a_rerun_reports_the_runs_rejects_as_they_are(tmp_path: Path) -> None:
    """Re-running a finished send with --rejects writes the same rejects and exits 3 again."""
    data = write_sales(tmp_path / "s.csv", 0, 50)
    lines = data.read_text().splitlines()
    lines[3] = lines[3].replace(",purchase,", ",,")  # event name empty
    lines[40] = lines[40].rsplit(",", 1)[0] + ",yesterday"  # time-format
    data.write_text("\n".join(lines) + "\n")
    schema = schema_toml(tmp_path / "schema.toml")
    ledger = tmp_path / "ledger.sqlite"
    with CollectorProcess(tmp_path / "r.ndjson") as collector:
        first = cli(
            *send_args(
                data, schema, collector.url, ledger, "--rejects", str(tmp_path / "first.csv")
            )
        )
        again = cli(
            *send_args(
                data, schema, collector.url, ledger, "--rejects", str(tmp_path / "again.csv")
            )
        )
        received = sum(collector.accepted().values())
    assert (first.returncode, again.returncode) == (3, 3)
    assert (tmp_path / "again.csv").read_text() == (tmp_path / "first.csv").read_text()
    assert len((tmp_path / "first.csv").read_text().splitlines()) == 3
    report = json.loads(again.stdout)
    assert (report["sent"], report["rejected"], report["skipped_done"]) == (0, 2, 48)
    assert received == 48
    status = json.loads(cli("status", "--ledger", str(ledger), "--json").stdout)["runs"]
    assert status[0]["rejected"] == 2  # not counted twice


def test_error_statuses_are_answers_not_maybe_arrivals(tmp_path: Path) -> None:
    """A 500 on some rows while others succeed fails them (exit 4), none left unknown; a 503
    for everyone is an outage: pending, nothing unknown, nothing failed."""
    data = write_sales(tmp_path / "s.csv", 0, 200)
    schema = schema_toml(tmp_path / "schema.toml")

    async def some_500(request: web.Request) -> web.StreamResponse:
        broken = request.query["u"].endswith("3")
        return web.Response(status=500 if broken else 200)

    async def all_503(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503)

    results = []
    for handler, extra in (
        (some_500, ["--max-attempts", "3"]),
        (all_503, ["--give-up-after", "3"]),
    ):
        server = Server(handler)
        try:
            url = f"http://127.0.0.1:{server.port}/event"
            ledger = tmp_path / f"{handler.__name__}.sqlite"
            results.append(cli(*send_args(data, schema, url, ledger, *extra), timeout=120))
        finally:
            server.close()
    partial, outage = (json.loads(r.stdout) for r in results)
    assert results[0].returncode == 4, results[0].stderr
    assert (partial["failed"], partial["sent"], partial["unknown"]) == (20, 180, 0)
    assert results[1].returncode == 1
    assert (outage["failed"], outage["pending"], outage["unknown"]) == (0, 200, 0)
