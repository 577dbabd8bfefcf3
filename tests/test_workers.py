"""``--workers N``: real sender processes, a real collector, real signals and kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from importer import api
from importer.collector import RunningCollector

from .helpers import (
    SALES_SCHEMA,
    CollectorProcess,
    cli,
    free_port,
    order_of,
    reported_unknown,
    schema_toml,
    send_args,
    start_cli,
    wait_for,
    write_sales,
)


def sender_processes(parent: int) -> list[int]:
    """The ``importer.workers`` processes whose parent is ``parent`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"importer.workers" in command:
            found.append(int(entry.name))
    return sorted(found)


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_sender_process_imports_neither_pandas_nor_pyarrow() -> None:
    """What a worker process loads, with each transport: no pandas, pyarrow or numpy."""
    code = (
        "import sys, importer.workers as w\n"
        "from importer.options import SendOptions\n"
        "w.transport_of(SendOptions(transport='curl'))\n"
        "w.transport_of(SendOptions(transport='aiohttp'))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'pandas', 'pyarrow', 'numpy'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize("transport", ["aiohttp", "curl"])
def test_two_sender_processes_deliver_every_row_once(tmp_path: Path, transport: str) -> None:
    """--workers 2: every row arrives exactly once, as previewed, and the report balances."""
    data = write_sales(tmp_path / "s.csv", 0, 3_000)
    previewed = api.preview(data, schema=SALES_SCHEMA, n=None)
    with RunningCollector() as collector:
        report = api.send(
            data,
            schema=SALES_SCHEMA,
            endpoint=collector.url,
            ledger=tmp_path / "l.sqlite",
            workers=2,
            transport=transport,
        )
        received = Counter(collector.accepted_queries())
    assert report.balanced(), report.accounting
    assert (report.sent, report.failed, report.pending) == (3_000, 0, 0)
    assert received == Counter(url.split("?", 1)[1] for url in previewed["url"])
    assert set(received.values()) == {1}


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["aiohttp", "curl"])
def test_a_killed_sender_process_is_noticed_and_the_run_finishes(
    tmp_path: Path, transport: str
) -> None:
    """kill -9 one of two sender processes mid-run: the parent carries on with the other,
    resends what the dead one held (may have arrived: counted), and finishes; every row
    arrives, duplicates no more than the printed bound."""
    rows = 8_000
    data = write_sales(tmp_path / "s.csv", 0, rows)
    schema = schema_toml(tmp_path / "s.toml")
    with CollectorProcess(tmp_path / "received.ndjson") as collector:
        args = send_args(data, schema, collector.url, tmp_path / "l.sqlite")
        process = start_cli(*args, "--workers", "2", "--rate", "2000", "--transport", transport)
        try:
            wait_for(lambda: sum(collector.accepted().values()) > 1_000)
            workers = sender_processes(process.pid)
            assert len(workers) == 2, workers
            os.kill(workers[0], signal.SIGKILL)
            out, err = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        received = Counter(order_of(q) for q in collector.accepted().elements())
    assert process.returncode == 0, err
    report = json.loads(out)
    assert report["balanced"] and report["sent"] == rows and report["pending"] == 0
    assert len(received) == rows  # lost 0
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= report["maybe_twice"]
    assert not running(workers[1])  # the other one ended with the run
    assert any("was lost mid-run" in note for note in report["notes"])


@pytest.mark.slow
def test_no_sender_process_outlives_a_killed_parent_and_the_run_resumes(tmp_path: Path) -> None:
    """kill -9 the parent of two sender processes: both are gone within seconds (no orphan
    keeps sending); the same command resumes; every row arrives, duplicates within the
    unknown rows the resume reported."""
    rows = 6_000
    data = write_sales(tmp_path / "s.csv", 0, rows)
    schema = schema_toml(tmp_path / "s.toml")
    with CollectorProcess(tmp_path / "received.ndjson") as collector:
        args = [*send_args(data, schema, collector.url, tmp_path / "l.sqlite"), "--workers", "2"]
        process = start_cli(*args, "--rate", "1500")
        try:
            wait_for(lambda: sum(collector.accepted().values()) > 1_000)
            workers = sender_processes(process.pid)
            assert len(workers) == 2, workers
        finally:
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
        wait_for(lambda: not any(running(pid) for pid in workers), timeout=10)
        settled = sum(collector.accepted().values())
        time.sleep(0.5)
        assert sum(collector.accepted().values()) == settled  # nobody sends any more
        final = cli(*args)
        assert final.returncode == 0, final.stderr
        received = Counter(order_of(q) for q in collector.accepted().elements())
    report = json.loads(final.stdout)
    assert report["balanced"] and report["pending"] == 0
    assert len(received) == rows
    assert sum(n - 1 for n in received.values()) <= reported_unknown(final.stderr)


@pytest.mark.slow
def test_sigint_with_workers_drains_every_process_and_resumes(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) with two sender processes: the run stops gracefully (exit 1, nothing
    unknown), the sender processes end with it, and the same command sends the rest: every
    row exactly once."""
    rows = 6_000
    data = write_sales(tmp_path / "s.csv", 0, rows)
    schema = schema_toml(tmp_path / "s.toml")
    with CollectorProcess(tmp_path / "received.ndjson") as collector:
        args = [*send_args(data, schema, collector.url, tmp_path / "l.sqlite"), "--workers", "2"]
        process = start_cli(*args, "--rate", "1500")
        try:
            wait_for(lambda: sum(collector.accepted().values()) > 1_000)
            workers = sender_processes(process.pid)
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == 1, err
        report = json.loads(out)
        assert report["balanced"] and report["pending"] > 0 and report["unknown"] == 0
        assert not any(running(pid) for pid in workers)
        final = cli(*args)
        assert final.returncode == 0, final.stderr
        received = collector.accepted()
    assert len(received) == rows
    assert set(received.values()) == {1}


@pytest.mark.slow
def test_an_outage_stops_every_sender_process_resumably(tmp_path: Path) -> None:
    """The endpoint goes down for longer than --give-up-after with two sender processes:
    the run stops (exit 1, nothing failed, the rest pending), no sender process is left,
    and once the server is back the same command sends the rest: every row exactly once."""
    rows = 3_000
    data = write_sales(tmp_path / "s.csv", 0, rows)
    schema = schema_toml(tmp_path / "s.toml")
    port = free_port()
    record = tmp_path / "received.ndjson"
    args = send_args(data, schema, f"http://127.0.0.1:{port}/event", tmp_path / "l.sqlite")
    args += ["--workers", "2", "--rate", "500", "--give-up-after", "3"]
    collector = CollectorProcess(record, port=port)
    try:
        process = start_cli(*args)
        wait_for(lambda: sum(collector.accepted().values()) > 500)
        workers = sender_processes(process.pid)
        collector.stop()
        out, err = process.communicate(timeout=60)
        report = json.loads(out)
        assert process.returncode == 1, err
        assert report["failed"] == 0 and report["pending"] > 0 and report["balanced"]
        assert "run the same command again" in " ".join(report["notes"])
        assert not any(running(pid) for pid in workers)
        collector = CollectorProcess(record, port=port)
        final = cli(*args)
        assert final.returncode == 0, final.stderr
    finally:
        collector.stop()
    received = Counter(order_of(q) for q in collector.accepted().elements())
    assert len(received) == rows  # lost 0
    assert sum(n - 1 for n in received.values()) <= reported_unknown(final.stderr)
