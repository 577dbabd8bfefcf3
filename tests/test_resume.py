"""Resumable runs with real processes, real signals and real SQLite files."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from . import helpers
from .helpers import (
    SALES_SCHEMA,
    CollectorProcess,
    cli,
    order_of,
    reported_unknown,
    schema_toml,
    start_cli,
    wait_for,
    write_sales,
)

pytestmark = pytest.mark.slow
ROWS = 50_000


def integrity(ledger: Path) -> str:
    """PRAGMA integrity_check of the ledger file."""
    with sqlite3.connect(ledger) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def settled_sent(ledger: Path) -> int:
    """Rows the ledger has recorded as sent."""
    with sqlite3.connect(ledger) as db:
        row = db.execute("SELECT coalesce(sum(sent), 0) FROM runs").fetchone()
    return int(row[0])


def send_args(data: Path, schema: Path, url: str, ledger: Path, *extra: str) -> list[str]:
    """The send command line used by these tests (rate-limited so kills land mid-run)."""
    return helpers.send_args(data, schema, url, ledger, "--rate", "4000", *extra)


@pytest.mark.parametrize("transport", ["aiohttp", "curl"])
def test_kill_9_at_random_points_loses_nothing(tmp_path: Path, transport: str) -> None:
    """kill -9 ten times mid-import: every row arrives, duplicates <= reported unknown."""
    data = write_sales(tmp_path / "sales.csv", 0, ROWS)
    schema = schema_toml(tmp_path / "schema.toml")
    ledger = tmp_path / "ledger.sqlite"
    rng = random.Random(20261126)
    unknown_reported = 0
    progress: list[int] = []
    assert SALES_SCHEMA["dedupe_key"]  # the crash loop runs with a dedupe key
    with CollectorProcess(tmp_path / "received.ndjson") as collector:
        args = send_args(data, schema, collector.url, ledger, "--transport", transport)
        for _ in range(10):
            before = sum(collector.accepted().values())
            process = start_cli(*args)
            wait_for(
                lambda before=before, process=process: (
                    sum(collector.accepted().values()) > before or process.poll() is not None
                )
            )
            time.sleep(rng.uniform(0.05, 1.5))
            process.send_signal(signal.SIGKILL)
            _, stderr = process.communicate(timeout=30)
            unknown_reported += reported_unknown(stderr)
            assert integrity(ledger) == "ok"
            progress.append(settled_sent(ledger))
        # With a dedupe key, each resume moves on (a resume once stalled re-claiming keys).
        assert progress == sorted(progress) and progress[-1] > progress[0]
        final = cli(*args)
        unknown_reported += reported_unknown(final.stderr)
        assert final.returncode == 0, final.stderr
        assert integrity(ledger) == "ok"
        received = collector.accepted()
    report = json.loads(final.stdout)
    assert report["balanced"] and report["pending"] == 0
    orders = Counter(order_of(q) for q in received.elements())
    assert len(orders) == ROWS  # lost = 0
    duplicates = sum(n - 1 for n in orders.values())
    assert duplicates <= unknown_reported


@pytest.mark.parametrize("transport", ["aiohttp", "curl"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_graceful_signals_lose_nothing_and_duplicate_nothing(
    tmp_path: Path, signum: int, transport: str
) -> None:
    """Five graceful stops: each exits 1 with rows pending; in the end, every row exactly once."""
    data = write_sales(tmp_path / "sales.csv", 0, 40_000)
    schema = schema_toml(tmp_path / "schema.toml")
    ledger = tmp_path / "ledger.sqlite"
    rng = random.Random(signum)
    with CollectorProcess(tmp_path / "received.ndjson") as collector:
        args = send_args(data, schema, collector.url, ledger, "--transport", transport)
        for _ in range(5):
            before = sum(collector.accepted().values())
            process = start_cli(*args)
            wait_for(lambda before=before: sum(collector.accepted().values()) > before)
            time.sleep(rng.uniform(0.05, 0.6))  # 5 stops leave most of the 40,000 rows
            process.send_signal(signum)
            stdout, stderr = process.communicate(timeout=60)
            assert process.returncode == 1, stderr
            report = json.loads(stdout)
            assert report["balanced"] and report["pending"] > 0
            assert report["unknown"] == 0
            assert "stopped on request" in " ".join(report["notes"])
            assert reported_unknown(stderr) == 0
        final = cli(*args)
        assert final.returncode == 0, final.stderr
        received = collector.accepted()
    assert len(received) == 40_000
    assert set(received.values()) == {1}


def test_kill_9_at_full_speed_with_curl_then_resume(tmp_path: Path) -> None:
    """--transport curl unpaced (no --rate: the pump's batch path, thousands of requests a
    second): kill -9 once a quarter has arrived, then resume. Nothing lost; duplicates no
    more than the unknown rows the resume reported; the ledger intact."""
    rows = 60_000
    data = write_sales(tmp_path / "sales.csv", 0, rows)
    schema = schema_toml(tmp_path / "schema.toml")
    ledger = tmp_path / "ledger.sqlite"
    with CollectorProcess(tmp_path / "received.ndjson") as collector:
        args = helpers.send_args(data, schema, collector.url, ledger, "--transport", "curl")
        process = start_cli(*args)
        try:
            wait_for(
                lambda: sum(collector.accepted().values()) > rows // 4 or process.poll() is not None
            )
            assert process.poll() is None, "the run ended before the kill"
        finally:
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
        assert integrity(ledger) == "ok"
        assert 0 < settled_sent(ledger) < rows
        final = cli(*args)
        assert final.returncode == 0, final.stderr
        received = collector.accepted()
    report = json.loads(final.stdout)
    assert report["balanced"] and report["pending"] == 0
    orders = Counter(order_of(q) for q in received.elements())
    assert len(orders) == rows  # lost = 0
    assert sum(n - 1 for n in orders.values()) <= reported_unknown(final.stderr)


def test_unknown_skip_after_a_kill_duplicates_nothing(tmp_path: Path) -> None:
    """After kill -9, --unknown skip sends nothing twice; what it skipped is at most the bound."""
    data = write_sales(tmp_path / "sales.csv", 0, 20_000)
    schema = schema_toml(tmp_path / "schema.toml")
    ledger = tmp_path / "ledger.sqlite"
    with CollectorProcess(tmp_path / "received.ndjson") as collector:
        process = start_cli(*send_args(data, schema, collector.url, ledger))
        wait_for(lambda: sum(collector.accepted().values()) > 2000)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        final = cli(*send_args(data, schema, collector.url, ledger, "--unknown", "skip"))
        assert final.returncode == 0, final.stderr
        received = collector.accepted()
    unknown = reported_unknown(final.stderr)
    assert (
        f"the {unknown:,} unknown rows are skipped: at most {unknown:,} events may be missing"
        in final.stderr
    )
    assert set(received.values()) == {1}  # duplicates = 0
    assert 20_000 - len(received) <= unknown


def test_a_kill_at_a_slow_rate_leaves_seconds_of_rows_unknown_not_the_file(
    tmp_path: Path,
) -> None:
    """--rate 50, kill -9 after ~2 s: rows are leased a second's worth at a time, so the
    unknown rows are a few seconds of sending (a newcomer found 1,870 of 2,000 rows seen
    unknown with chunks of 1,024); the resume sends the rest, duplicates within them."""
    rows = 3_000
    data = write_sales(tmp_path / "sales.csv", 0, rows)
    schema = schema_toml(tmp_path / "schema.toml")
    ledger = tmp_path / "ledger.sqlite"
    with CollectorProcess(tmp_path / "received.ndjson") as collector:
        args = send_args(data, schema, collector.url, ledger)
        process = start_cli(*args, "--rate", "50")
        wait_for(lambda: sum(collector.accepted().values()) > 100)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        final = cli(*args)
        assert final.returncode == 0, final.stderr
        received = Counter(order_of(q) for q in collector.accepted().elements())
    unknown = reported_unknown(final.stderr)
    assert 0 < unknown <= 5 * 50 + 32  # ~4 chunks of a second's worth, and those in flight
    assert len(received) == rows
    assert sum(n - 1 for n in received.values()) <= unknown


def test_changed_file_and_schema_are_refused_until_new_run(tmp_path: Path) -> None:
    """Same path with other content, or another schema: exit 1 explaining --new-run."""
    data = write_sales(tmp_path / "sales.csv", 0, 50)
    schema = schema_toml(tmp_path / "schema.toml")
    ledger = tmp_path / "ledger.sqlite"
    with CollectorProcess(tmp_path / "received.ndjson") as collector:
        assert cli(*send_args(data, schema, collector.url, ledger)).returncode == 0
        write_sales(data, 1, 50)
        refused = cli(*send_args(data, schema, collector.url, ledger))
        assert refused.returncode == 1
        assert "but the file's contents changed since" in refused.stderr
        assert "pass --new-run" in refused.stderr
        write_sales(data, 0, 50)
        schema_toml(schema, {**SALES_SCHEMA, "value": {"column": "amount", "scale": 1000}})
        refused = cli(*send_args(data, schema, collector.url, ledger))
        assert refused.returncode == 1
        assert "but the schema changed since" in refused.stderr
        fresh = cli(*send_args(data, schema, collector.url, ledger, "--new-run"))
        assert fresh.returncode == 0, fresh.stderr
        report = json.loads(fresh.stdout)
        assert report["skipped_duplicate"] == 50  # the orders were sent by the first run
        assert not report["resume"]["resumed"]


def test_retry_after_a_window_of_400s_delivers_each_failure_once(tmp_path: Path) -> None:
    """Rows answered 400 during a window fail; `retry` afterwards sends each exactly once."""
    data = write_sales(tmp_path / "sales.csv", 0, 3000)
    schema = schema_toml(tmp_path / "schema.toml")
    ledger = tmp_path / "ledger.sqlite"
    with CollectorProcess(tmp_path / "received.ndjson", "--bad-request-window", "0:1") as collector:
        sent = cli(
            "send",
            str(data),
            "--schema",
            str(schema),
            "--endpoint",
            collector.url,
            "--ledger",
            str(ledger),
            "--quiet",
            "--json",
            "--rate",
            "1000",
        )
        assert sent.returncode == 4, sent.stderr  # finished, rows failed permanently
        report = json.loads(sent.stdout)
        assert report["failed"] > 0 and report["sent"] > 0 and report["balanced"]
        failed = report["failed"]
        export = tmp_path / "failures.csv"
        assert cli("failures", "export", str(export), "--ledger", str(ledger)).returncode == 0
        assert len(export.read_text().splitlines()) == failed + 1
        status = json.loads(cli("status", "--ledger", str(ledger), "--json").stdout)["runs"]
        assert status[0]["failed"] == failed
        retried = cli("retry", "--ledger", str(ledger), "--quiet", "--json")
        assert retried.returncode == 0, retried.stderr
        assert json.loads(retried.stdout)["sent"] == failed
        received = collector.accepted()
    assert len(received) == 3000 and set(received.values()) == {1}
    status = json.loads(cli("status", "--ledger", str(ledger), "--json").stdout)["runs"]
    assert (status[0]["failed"], status[0]["sent"]) == (0, 3000)


def test_overlapping_files_send_each_key_once(tmp_path: Path) -> None:
    """Jan-Mar then Mar-May with a dedupe key: March is imported once."""
    first = write_sales(tmp_path / "jan_mar.csv", 0, 3000)
    second = write_sales(tmp_path / "mar_may.csv", 2000, 3000)
    schema = schema_toml(tmp_path / "schema.toml")
    ledger = tmp_path / "ledger.sqlite"
    with CollectorProcess(tmp_path / "received.ndjson") as collector:
        for data in (first, second):
            result = cli(*send_args(data, schema, collector.url, ledger))
            assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        received = collector.accepted()
    assert report["skipped_duplicate"] == 1000 and report["sent"] == 2000
    orders = Counter(order_of(q) for q in received.elements())
    assert len(orders) == 5000 and set(orders.values()) == {1}
