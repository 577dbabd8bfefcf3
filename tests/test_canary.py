"""``--canary N``: a few rows of every experiment/variation pair first, then the rest, each
row received once by a real local server."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from importer import api
from importer.collector import RunningCollector

from .helpers import cli

ROOT = Path(__file__).resolve().parent.parent
SALES = ROOT / "sample_data" / "offline_sales.csv"
SCHEMA = ROOT / "schemas" / "offline_sales.toml"


def pairs_in(query: str) -> set[tuple[str, str]]:
    """The experiment/variation pairs of one request, read from its query (x{e}={v})."""
    return set(re.findall(r"(?:^|&)x(\d+)=([\d_]+)", query))


def every_pair() -> set[tuple[str, str]]:
    """The pairs of every valid row of the sample, from the previewed requests."""
    urls = api.preview(SALES, schema=SCHEMA, n=None)["url"]
    return set().union(*(pairs_in(url.split("?", 1)[1]) for url in urls))


def test_a_canary_covers_every_pair_then_the_rest_goes_once(tmp_path: Path) -> None:
    """10 rows cover all 7 pairs of the sample; the run stops resumably (exit 1); the same
    call without the canary sends the other 590; the server gets each row exactly once."""
    urls = api.preview(SALES, schema=SCHEMA, n=None)["url"]
    previewed = Counter(url.split("?", 1)[1] for url in urls)
    ledger = tmp_path / "l.sqlite"
    with RunningCollector() as collector:
        first = api.send(SALES, schema=SCHEMA, endpoint=collector.url, ledger=ledger, canary=10)
        canary = collector.accepted_queries()
        rest = api.send(SALES, schema=SCHEMA, endpoint=collector.url, ledger=ledger)
        received = Counter(collector.accepted_queries())
    assert (first.sent, first.pending, first.stopped, first.exit_code) == (10, 590, "canary", 1)
    assert not [w for w in first.warnings if w.startswith("canary:")]  # every pair covered
    assert len(canary) == 10
    assert set().union(*(pairs_in(q) for q in canary)) == every_pair()  # 7 pairs
    assert (rest.sent, rest.pending, rest.exit_code) == (590, 0, 0)
    assert received == previewed and set(received.values()) == {1}
    assert sum(row["events"] for row in first.to_dict()["receipt"]) >= 10


def test_a_canary_smaller_than_the_pairs_covers_as_many_as_it_can(tmp_path: Path) -> None:
    """3 rows for 7 pairs: each row brings a pair not covered before (3 pairs at least)."""
    with RunningCollector() as collector:
        report = api.send(
            SALES, schema=SCHEMA, endpoint=collector.url, ledger=tmp_path / "l.sqlite", canary=3
        )
        canary = collector.accepted_queries()
    assert report.sent == 3 and len(canary) == 3
    covered = set().union(*(pairs_in(q) for q in canary))
    assert len(covered) >= 3
    left_out = sorted(every_pair() - covered)
    (warning,) = [w for w in report.warnings if w.startswith("canary:")]
    assert f"cover {len(covered)} of 7 experiment:variation pairs" in warning
    assert all(f"{e}:{v}" in warning for e, v in left_out)


def test_two_canaries_never_send_a_row_twice(tmp_path: Path) -> None:
    """A canary run again takes rows not sent yet; the run without it sends what is left."""
    ledger = tmp_path / "l.sqlite"
    with RunningCollector() as collector:
        for _ in range(2):
            api.send(SALES, schema=SCHEMA, endpoint=collector.url, ledger=ledger, canary=8)
        assert len(collector.accepted_queries()) == 16
        api.send(SALES, schema=SCHEMA, endpoint=collector.url, ledger=ledger)
        received = Counter(collector.accepted_queries())
    assert len(received) == 600 and set(received.values()) == {1}


def test_the_cli_canary_stops_with_exit_1_and_says_what_to_check(tmp_path: Path) -> None:
    """``send --canary 10 --json``: exit 1, stopped "canary", the receipt and the note."""
    with RunningCollector() as collector:
        args = ["send", str(SALES), "-s", str(SCHEMA), "--endpoint", collector.url]
        args += ["--ledger", str(tmp_path / "l.sqlite"), "--json", "-q"]
        done = cli(*args, "--canary", "10")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["stopped"] == "canary" and report["sent"] == 10
    assert report["receipt"]
    assert any("without --canary" in note for note in report["notes"])
