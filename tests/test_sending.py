"""End-to-end delivery against a real collector on 127.0.0.1 (no mocked transport)."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from importer import api
from importer.collector import Faults, RunningCollector

from .helpers import SALES_SCHEMA, cli, free_port, schema_toml, write_sales

ROOT = Path(__file__).resolve().parent.parent
SALES = ROOT / "sample_data" / "offline_sales.csv"
SALES_SCHEMA_FILE = ROOT / "schemas" / "offline_sales.toml"


@pytest.fixture(params=["aiohttp", "curl"])
def transport(request: pytest.FixtureRequest) -> str:
    """Each whole-run test below runs with both transports."""
    return str(request.param)


def query(url: str) -> str:
    """The query part of a URL."""
    return urlsplit(url).query


def test_every_valid_sample_row_arrives_once_as_previewed(tmp_path: Path, transport: str) -> None:
    """Each valid row arrives exactly once, with exactly the query preview printed for it."""
    previewed = api.preview(SALES, schema=SALES_SCHEMA_FILE, n=None)
    with RunningCollector() as collector:
        report = api.send(
            SALES,
            schema=SALES_SCHEMA_FILE,
            endpoint=collector.url,
            ledger=tmp_path / "l.sqlite",
            transport=transport,
        )
        received = Counter(collector.accepted_queries())
    assert report.balanced(), report.accounting
    assert (report.sent, report.rejected, report.failed, report.pending) == (600, 0, 0, 0)
    assert received == Counter(query(u) for u in previewed["url"])
    assert set(received.values()) == {1}


def test_faults_deliver_everything_and_honour_retry_after(tmp_path: Path, transport: str) -> None:
    """20% 503, 5% 429 (Retry-After 1), 2% resets, 1% hangs: all delivered, none failed."""
    faults = Faults(
        error_rate=0.2,
        throttle_rate=0.05,
        retry_after=1,
        reset_rate=0.02,
        hang_rate=0.01,
        hang_seconds=3,
        seed=11,
    )
    with RunningCollector(faults=faults) as collector:
        report = api.send(
            SALES,
            schema=SALES_SCHEMA_FILE,
            endpoint=collector.url,
            ledger=None,
            total_timeout=1.0,
            max_attempts=25,
            backoff_base=0.05,
            backoff_cap=0.5,
            transport=transport,
        )
        records = collector.records
    assert report.balanced(), report.accounting
    assert (report.sent, report.failed, report.pending) == (600, 0, 0)
    statuses = Counter(r["status"] for r in records)
    assert statuses[429] > 0 and statuses[503] + statuses[500] > 0
    assert statuses[0] > 0 and statuses[-1] > 0  # resets and hangs really happened
    accepted = Counter(r["query"] for r in records if r["status"] == 200)
    assert len(accepted) == 600 and set(accepted.values()) == {1}
    by_query: dict[str, list[dict[str, float]]] = defaultdict(list)
    for record in records:
        by_query[record["query"]].append(record)
    early = []
    for attempts in by_query.values():
        attempts.sort(key=lambda r: r["t"])
        for throttled, following in itertools.pairwise(attempts):
            if throttled["status"] == 429 and following["t"] < throttled["retry_not_before"]:
                early.append((throttled, following))
    assert early == []


def test_retry_after_as_an_http_date(tmp_path: Path, transport: str) -> None:
    """Retry-After given as an HTTP date is honoured too."""
    faults = Faults(throttle_rate=0.3, retry_after=1, retry_after_date=True, seed=3)
    data = write_sales(tmp_path / "s.csv", 0, 60)
    with RunningCollector(faults=faults) as collector:
        report = api.send(
            data,
            schema=SALES_SCHEMA,
            endpoint=collector.url,
            ledger=None,
            max_attempts=20,
            transport=transport,
        )
        records = sorted(collector.records, key=lambda r: r["t"])
    assert report.sent == 60
    for throttled in (r for r in records if r["status"] == 429):
        later = [r for r in records if r["query"] == throttled["query"] and r["t"] > throttled["t"]]
        assert later and later[0]["t"] >= throttled["retry_not_before"]


def test_bad_requests_fail_with_their_status_and_the_rest_arrive(
    tmp_path: Path, transport: str
) -> None:
    """A 400 for some rows: those fail with status 400, the others are delivered."""
    data = write_sales(tmp_path / "s.csv", 0, 200)
    faults = Faults(bad_request_match=r"u=user-\d*7&")
    with RunningCollector(faults=faults) as collector:
        report = api.send(
            data, schema=SALES_SCHEMA, endpoint=collector.url, ledger=None, transport=transport
        )
        accepted = collector.accepted_queries()
    assert report.balanced(), report.accounting
    assert (report.sent, report.failed) == (180, 20)
    failures = report.failures
    assert sorted(failures["row"]) == [i + 1 for i in range(200) if i % 10 == 7]
    assert set(failures["status"]) == {400}
    assert set(failures["attempts"]) == {1}
    assert len(accepted) == 180 and not any("u=user-7&" in q for q in accepted)
    assert report.exit_code == 4  # rows failed permanently: retry, not fix the data


def test_totals_match_what_the_collector_received(tmp_path: Path, transport: str) -> None:
    """The report's v totals per event name equal the sums the collector got."""
    data = write_sales(tmp_path / "s.csv", 0, 300)
    with RunningCollector() as collector:
        report = api.send(
            data, schema=SALES_SCHEMA, endpoint=collector.url, ledger=None, transport=transport
        )
        got: Counter[str] = Counter()
        for q in collector.accepted_queries():
            params = dict(parse_qsl(q))
            got[params["n"]] += int(params["v"])
    assert dict(report.stats.value_per_event) == dict(got)
    assert sum(got.values()) == collector.stats.value_total


def test_nothing_listening_stops_resumable_without_failures(tmp_path: Path, transport: str) -> None:
    """Connection refused everywhere: exit 1 after --give-up-after; rows pending, none failed."""
    data = write_sales(tmp_path / "s.csv", 0, 50)
    schema = schema_toml(tmp_path / "s.toml")
    result = cli(
        "send",
        str(data),
        "--schema",
        str(schema),
        "--endpoint",
        f"http://127.0.0.1:{free_port()}/event",
        "--give-up-after",
        "1.5",
        "--quiet",
        "--ledger",
        str(tmp_path / "l.sqlite"),
        "--json",
        "--transport",
        transport,
    )
    assert result.returncode == 1, result.stderr
    import json

    report = json.loads(result.stdout)
    assert (report["sent"], report["failed"], report["pending"]) == (0, 0, 50)
    assert report["balanced"] is True
    assert (
        "stopped: nothing was delivered for 1.5 s (last error: cannot connect:"
        in report["notes"][0]
    )
    assert "run the same command again to resume" in report["notes"][0]
    assert report["unknown"] == 0  # refused connections certainly never arrived


def test_send_cli_sandbox_prints_what_the_collector_received(tmp_path: Path) -> None:
    """--sandbox sends to an in-process collector and ends with what it received."""
    result = cli(
        "send",
        str(SALES),
        "--schema",
        str(SALES_SCHEMA_FILE),
        "--sandbox",
        "--quiet",
        "--ledger",
        str(tmp_path / "l.sqlite"),
    )
    assert result.returncode == 0, result.stderr
    assert (
        "rows read 600 = sent 600 + filtered 0 + rejected 0 + failed 0 + skipped 0 + pending 0"
        in result.stdout
    )
    assert (
        "the sandbox collector received 600 requests: 600 answered 200, 0 invalid by the "
        "spec, 0 duplicate queries, sum of v 11,479,351"
    ) in result.stdout


def test_dry_run_is_preview(tmp_path: Path) -> None:
    """send --dry-run prints the URLs and sends nothing."""
    result = cli(
        "send",
        str(SALES),
        "--schema",
        str(SALES_SCHEMA_FILE),
        "--dry-run",
        "--endpoint",
        "http://127.0.0.1:9/event",
    )
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 600
    assert result.stdout.startswith("http://127.0.0.1:9/event?a=1234567&n=offline_purchase&u=")


@pytest.mark.parametrize("rate", [50.0])
def test_rate_limit_spaces_requests(tmp_path: Path, rate: float, transport: str) -> None:
    """--rate N keeps the average under N per second after the first burst."""
    data = write_sales(tmp_path / "s.csv", 0, 150)
    with RunningCollector() as collector:
        api.send(
            data,
            schema=SALES_SCHEMA,
            endpoint=collector.url,
            ledger=None,
            rate=rate,
            transport=transport,
        )
        times = sorted(r["t"] for r in collector.records)
    # A burst of a tenth of a second's worth, then `rate` per second: 150 rows need ~2.9 s.
    assert times[-1] - times[0] >= (150 - rate / 10) / rate * 0.9
