"""``--dask``: the sender side on a real Dask cluster (``LocalCluster`` with worker
processes), a real collector, and a Dask worker killed with -9."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from importer import api
from importer.collector import RunningCollector

from .helpers import (
    SALES_SCHEMA,
    CollectorProcess,
    cli,
    free_port,
    order_of,
    schema_toml,
    send_args,
    start_cli,
    wait_for,
    write_sales,
)

distributed = pytest.importorskip("distributed")


def local_cluster() -> Any:
    """Two worker processes of one thread each, as ``dask worker --nworkers 2`` makes."""
    return distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with local_cluster() as running:
        yield running


@pytest.mark.parametrize("transport", ["aiohttp", "curl"])
def test_a_notebook_sends_on_its_cluster_every_row_once(
    tmp_path: Path, cluster: Any, transport: str
) -> None:
    """send(..., dask=client): every row arrives exactly once, as previewed; the report
    balances."""
    data = write_sales(tmp_path / "s.csv", 0, 3_000)
    previewed = api.preview(data, schema=SALES_SCHEMA, n=None)
    with distributed.Client(cluster) as client, RunningCollector() as collector:
        report = api.send(
            data,
            schema=SALES_SCHEMA,
            endpoint=collector.url,
            ledger=tmp_path / "l.sqlite",
            dask=client,
            transport=transport,
        )
        received = Counter(collector.accepted_queries())
    assert report.balanced(), report.accounting
    assert (report.sent, report.failed, report.pending) == (3_000, 0, 0)
    assert received == Counter(url.split("?", 1)[1] for url in previewed["url"])
    assert set(received.values()) == {1}


def test_the_cli_sends_on_a_cluster_by_its_address(tmp_path: Path, cluster: Any) -> None:
    """``send --dask tcp://...`` as a user types it: exactly once, then a second run sends
    nothing (the ledger stays with the CLI)."""
    rows = 2_000
    data = write_sales(tmp_path / "s.csv", 0, rows)
    schema = schema_toml(tmp_path / "s.toml")
    with CollectorProcess(tmp_path / "received.ndjson") as collector:
        args = [*send_args(data, schema, collector.url, tmp_path / "l.sqlite")]
        first = cli(*args, "--dask", cluster.scheduler_address)
        again = cli(*args, "--dask", cluster.scheduler_address)
        received = collector.accepted()
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["sent"] == rows
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["sent"] == 0
    assert len(received) == rows and set(received.values()) == {1}


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path: Path) -> None:
    """Nobody listens at the address: exit 2, one line naming it, no traceback; nothing was
    sent, so the next run with a working cluster owes nothing."""
    data = write_sales(tmp_path / "s.csv", 0, 50)
    schema = schema_toml(tmp_path / "s.toml")
    address = f"tcp://127.0.0.1:{free_port()}"
    with RunningCollector() as collector:
        args = send_args(data, schema, collector.url, tmp_path / "l.sqlite")
        done = cli(*args, "--dask", address, "--connect-timeout", "2")
        assert collector.accepted_queries() == []
    assert done.returncode == 2, done.stderr
    assert f"cannot reach the Dask scheduler at {address}" in done.stderr
    assert "Traceback" not in done.stderr
    assert "unknown" not in done.stderr.split("error:", 1)[1]


def test_dask_and_workers_do_not_go_together(tmp_path: Path) -> None:
    """--dask with --workers: a usage error before anything starts."""
    data = write_sales(tmp_path / "s.csv", 0, 5)
    schema = schema_toml(tmp_path / "s.toml")
    args = send_args(data, schema, "http://127.0.0.1:9/event", tmp_path / "l.sqlite")
    done = cli(*args, "--dask", "tcp://127.0.0.1:9", "--workers", "2")
    assert done.returncode == 2
    assert "dask and workers do not go together" in done.stderr
    assert "Traceback" not in done.stderr


def worker_pids(cluster: Any) -> dict[str, int]:
    """Each Dask worker's address -> its process id."""
    with distributed.Client(cluster) as client:
        return dict(client.run(os.getpid))


@pytest.mark.slow
def test_a_lost_dask_worker_is_noticed_and_the_run_finishes(tmp_path: Path) -> None:
    """kill -9 one of two Dask worker processes mid-run: the CLI notices, resends what its
    sender held (may have arrived: counted), carries on with the other worker and finishes;
    every row arrives, duplicates no more than the printed bound."""
    rows = 8_000
    data = write_sales(tmp_path / "s.csv", 0, rows)
    schema = schema_toml(tmp_path / "s.toml")
    with local_cluster() as cluster, CollectorProcess(tmp_path / "received.ndjson") as collector:
        pids = worker_pids(cluster)
        args = send_args(data, schema, collector.url, tmp_path / "l.sqlite")
        process = start_cli(*args, "--dask", cluster.scheduler_address, "--rate", "2000")
        try:
            wait_for(lambda: sum(collector.accepted().values()) > 1_000)
            os.kill(next(iter(pids.values())), signal.SIGKILL)
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
    assert sum(n - 1 for n in received.values()) <= report["maybe_twice"]
    assert "was lost mid-run" in report["notes"][-1]


@pytest.mark.slow
def test_sigint_on_a_cluster_drains_and_resumes(tmp_path: Path, cluster: Any) -> None:
    """SIGINT (Ctrl-C) with --dask: the run stops gracefully (exit 1, nothing unknown) and
    the same command sends the rest: every row exactly once."""
    rows = 6_000
    data = write_sales(tmp_path / "s.csv", 0, rows)
    schema = schema_toml(tmp_path / "s.toml")
    with CollectorProcess(tmp_path / "received.ndjson") as collector:
        args = [*send_args(data, schema, collector.url, tmp_path / "l.sqlite")]
        args += ["--dask", cluster.scheduler_address]
        process = start_cli(*args, "--rate", "1500")
        try:
            wait_for(lambda: sum(collector.accepted().values()) > 1_000)
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == 1, err
        report = json.loads(out)
        assert report["balanced"] and report["pending"] > 0 and report["unknown"] == 0
        final = cli(*args)
        assert final.returncode == 0, final.stderr
        received = collector.accepted()
    assert len(received) == rows
    assert set(received.values()) == {1}
