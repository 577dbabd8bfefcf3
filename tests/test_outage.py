"""Outages of a real server mid-run: nothing fails for them, the same command finishes."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from .helpers import CollectorProcess, cli, free_port, order_of, schema_toml, start_cli, write_sales

pytestmark = pytest.mark.slow
ROWS = 3_000


@pytest.mark.parametrize("transport", ["aiohttp", "curl"])
def test_server_down_several_times_loses_and_fails_nothing(tmp_path: Path, transport: str) -> None:
    """Stop the server at random points (short and long outages), bring it back each time.

    With the default attempts no row fails; a run that gave up is resumed by the same command;
    the server counts every order exactly once.
    """
    data = write_sales(tmp_path / "sales.csv", 0, ROWS)
    schema = schema_toml(tmp_path / "schema.toml")
    port = free_port()
    record = tmp_path / "received.ndjson"
    args = ["send", str(data), "-s", str(schema), "--endpoint", f"http://127.0.0.1:{port}/event"]
    args += ["--ledger", str(tmp_path / "ledger.sqlite"), "--json", "-q", "--rate", "200"]
    args += ["--give-up-after", "4", "--transport", transport]
    rng = random.Random(20261129)
    collector = CollectorProcess(record, port=port)
    reports = []
    try:
        # Each run rides out a short outage (1-2 s), then gives up in a long one (6-7 s) and
        # stops resumably (exit 1); the same command again resumes. No process is killed.
        for short, long in ((1.5, 6.5), (1.0, 6.0)):
            process = start_cli(*args)
            for outage in (short, long):
                time.sleep(rng.uniform(1.0, 2.5))
                collector.stop()
                time.sleep(outage)
                collector = CollectorProcess(record, port=port)
            out, err = process.communicate(timeout=120)
            report = json.loads(out)
            assert process.returncode == 1, err  # stopped, resumable
            assert report["failed"] == 0 and report["pending"] > 0
            assert "run the same command again" in " ".join(report["notes"])
            reports.append(report)
        final = cli(*args)
        reports.append(json.loads(final.stdout))
        assert final.returncode == 0, final.stderr
        assert "rows the last run left pending" in final.stderr
    finally:
        collector.stop()
    received = Counter(order_of(q) for q in collector.accepted().elements())
    assert all(r["failed"] == 0 for r in reports)
    assert set(received) == {str(i) for i in range(ROWS)}  # lost 0
    assert max(received.values()) == 1  # duplicates 0, counted by the server
    status = json.loads(
        cli("status", "--ledger", str(tmp_path / "ledger.sqlite"), "--json").stdout
    )["runs"]
    assert status[0]["failed"] == 0 and status[0]["sent"] == ROWS


@pytest.mark.parametrize("transport", ["aiohttp", "curl"])
def test_a_row_fails_only_when_others_get_through(tmp_path: Path, transport: str) -> None:
    """Few attempts, long outage: rows run out of attempts while the server is down, yet none
    fails (the endpoint is the problem, not the rows); 400s while others succeed do fail."""
    data = write_sales(tmp_path / "sales.csv", 0, 1_000)
    schema = schema_toml(tmp_path / "schema.toml")
    port = free_port()
    record = tmp_path / "received.ndjson"
    args = ["send", str(data), "-s", str(schema), "--endpoint", f"http://127.0.0.1:{port}/event"]
    args += ["--ledger", str(tmp_path / "ledger.sqlite"), "--json", "-q", "--rate", "200"]
    args += ["--max-attempts", "2", "--give-up-after", "60", "--transport", transport]
    collector = CollectorProcess(record, port=port)
    try:
        process = start_cli(*args)
        time.sleep(1.5)
        collector.stop()
        time.sleep(5)  # every row in flight or queued tries twice or more meanwhile
        collector = CollectorProcess(record, "--bad-request-match", "u=user-900&", port=port)
        out, err = process.communicate(timeout=120)
    finally:
        collector.stop()
    report = json.loads(out)
    assert process.returncode == 4, err  # finished; the one bad row failed permanently
    assert report["failed"] == 1 and report["sent"] == 999
    received = Counter(order_of(q) for q in collector.accepted().elements())
    assert set(received) == {str(i) for i in range(1_000)} - {"900"}
