"""Tests for the local collector: spec checks, recording, stats, faults."""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from importer.collector import Faults, RunningCollector, check_query
from importer.errors import UsageError

from .conftest import SPEC_QUERY


def get(url: str) -> int:
    """GET a URL; the status code."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return int(error.code)


def test_spec_example_is_valid() -> None:
    """The spec's example query breaks no rule."""
    assert check_query(parse_qsl(SPEC_QUERY)) == []


@pytest.mark.parametrize(
    ("query", "rules"),
    [
        pytest.param("a=1.evil&d=1&u=u&n=e&x1=2", ["project-id-digits"], id="hostile-project"),
        pytest.param("a=1&d=1&u=&n=e&x1=2", ["user-id-empty"], id="no-user"),
        pytest.param("a=1&d=1&u=u&n=e", ["experiment-missing"], id="no-experiment"),
        pytest.param("a=1&d=1&u=u&n=e&x1=2&v=1.5", ["value-format"], id="float-value"),
        pytest.param("a=1&d=1&u=u&n=e&x1=2&a=2", ["duplicate-parameter"], id="repeated"),
        pytest.param("a=1&d=1&u=u&n=e&x1=2&foo=1", ["unknown-parameter"], id="unknown"),
        pytest.param("a=1&d=1&u=u&n=e&x1=2_", ["variation-id-format"], id="bad-variation"),
    ],
)
def test_invalid_queries_are_named(query: str, rules: list[str]) -> None:
    """Each problem is reported with check's rule code."""
    assert check_query(parse_qsl(query, keep_blank_values=True)) == rules


def test_records_to_sqlite_and_counts(tmp_path: Path) -> None:
    """Every request is recorded; /stats counts accepted, invalid and duplicate queries."""
    record = tmp_path / "received.sqlite"
    with RunningCollector(record=record) as collector:
        base = collector.url
        assert get(f"{base}?{SPEC_QUERY}") == 200
        assert get(f"{base}?{SPEC_QUERY}") == 200
        assert get(f"{base}?a=x&n=e") == 200  # answered 200 like the real API, but invalid
        with urllib.request.urlopen(base.replace("/event", "/stats"), timeout=10) as response:
            stats = json.loads(response.read())
    assert (stats["received"], stats["accepted"], stats["invalid"], stats["duplicates"]) == (
        3,
        3,
        1,
        1,
    )
    assert stats["value_total"] == 1000
    rows = sqlite3.connect(record).execute("SELECT query, status FROM requests").fetchall()
    assert rows == [(SPEC_QUERY, 200), (SPEC_QUERY, 200), ("a=x&n=e", 200)]


def test_injected_statuses_and_retry_after(tmp_path: Path) -> None:
    """throttle_rate=1 answers 429 with Retry-After; bad_request_match answers 400."""
    with RunningCollector(faults=Faults(throttle_rate=1.0, retry_after=2)) as collector:
        request = urllib.request.Request(f"{collector.url}?{SPEC_QUERY}")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 429
        assert caught.value.headers["Retry-After"] == "2"
        caught.value.close()
        record = collector.records[0]
        assert record["retry_not_before"] == pytest.approx(record["t"] + 2)
    with RunningCollector(faults=Faults(bad_request_match="u=bad")) as collector:
        assert get(f"{collector.url}?a=1&u=bad&n=e") == 400
        assert get(f"{collector.url}?a=1&u=good&n=e") == 200


def test_fault_rates_are_checked() -> None:
    """Rates that add up to more than 1 are refused."""
    with pytest.raises(UsageError, match="fault rates must be between 0 and 1"):
        Faults(error_rate=0.7, reset_rate=0.5)
