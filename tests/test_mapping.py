"""Tests for importer.mapping: rows to parameters, URLs and rejects."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pyarrow as pa
import pytest

from importer import preview
from importer.api import iter_events

from .conftest import HEADER, NOW, SPEC_QUERY, SPEC_ROW

COOKIE = "%7B%22987654321%22%3A%221111111%22%2C%22876543210%22%3A%222222222_3333333%22%7D"


def events_and_rejects(
    source: Any, schema: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Map a whole source; return the events and the rejects as dicts."""
    events: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    for mapped in iter_events(source, schema=schema, now=NOW):
        events += mapped.events.to_pylist()
        rejects += mapped.rejects.to_pylist()
    return events, rejects


# The cells of a row that maps cleanly with the test schema; tests change only what they test.
_CELLS = {
    "user": "u",
    "event": "e",
    "exp": "1",
    "var": "2",
    "goals": "3",
    "amount": "1",
    "ts": "1462472175",
}


def rows(**columns: list[Any] | None) -> pa.Table:
    """The cells above; a list replaces a column (and sets the row count), None drops it."""
    count = max((len(v) for v in columns.values() if v is not None), default=1)
    cells: dict[str, list[Any]] = {name: [cell] * count for name, cell in _CELLS.items()}
    for name, values in columns.items():
        if values is None:
            del cells[name]
        else:
            cells[name] = values
    return pa.table(cells)


def test_spec_row_gives_the_spec_query(schema: dict[str, Any], write_csv) -> None:  # type: ignore[no-untyped-def]
    """The spec's example row becomes exactly the spec's example request."""
    schema["endpoint"] = "http://{project_id}.log.optimizely.com/event"
    events, rejects = events_and_rejects(write_csv([HEADER, SPEC_ROW]), schema)
    assert rejects == []
    assert [e["url"] for e in events] == [f"http://1234567.log.optimizely.com/event?{SPEC_QUERY}"]


def test_cookie_example(schema: dict[str, Any]) -> None:
    """The spec's optimizelyBuckets cookie gives both pairs in order."""
    del schema["experiments"]
    schema["buckets"] = {"column": "cookie"}
    frame = rows(user=["u1"], exp=None, var=None, goals=["1"], cookie=[COOKIE])
    events, rejects = events_and_rejects(frame, schema)
    assert rejects == []
    assert events[0]["x"] == "x987654321=1111111&x876543210=2222222_3333333"
    assert "&u=u1&x987654321=1111111&x876543210=2222222_3333333&v=100&" in events[0]["url"]


@pytest.mark.parametrize(
    "cookie", ["%7Bnot json", "[1,2]", '{"12":"abc"}', '{"1a":"2"}', '{"1":1.5}']
)
def test_bad_cookies_are_refused(schema: dict[str, Any], cookie: str) -> None:
    """Cookies that are not an object of digit ids are rejected, not half-sent."""
    del schema["experiments"]
    schema["buckets"] = {
        "column": "cookie",
        "format": "json" if not cookie.startswith("%") else "cookie",
    }
    frame = rows(user=["u1"], exp=None, var=None, goals=["1"], cookie=[cookie])
    events, rejects = events_and_rejects(frame, schema)
    assert events == []
    assert [r["rule"] for r in rejects] == ["buckets-invalid"]


@pytest.mark.parametrize(
    "project",
    [
        pytest.param("evil.com/", id="host-and-path"),
        pytest.param("1.evil.com", id="subdomain"),
        pytest.param("\uff11\uff12\uff13", id="fullwidth-digits"),
        pytest.param("123@evil", id="userinfo"),
        pytest.param("", id="empty"),
    ],
)
def test_hostile_project_ids_are_refused(schema: dict[str, Any], write_csv, project: str) -> None:  # type: ignore[no-untyped-def]
    """A project id from a column goes into the host name: digits only."""
    schema["project_id"] = {"column": "project"}
    path = write_csv([HEADER + ",project", f"{SPEC_ROW},{project}"])
    events, rejects = events_and_rejects(path, schema)
    assert events == []
    assert [(r["rule"], r["value"]) for r in rejects] == [("project-id-digits", project)]


def test_cells_cannot_add_parameters(schema: dict[str, Any]) -> None:
    """'buy&v=999' stays one event name; a '#' cannot cut the query."""
    frame = rows(user=["a#b"], event=["buy&v=999"], amount=["1.00"])
    events, _ = events_and_rejects(frame, schema)
    query = urlsplit(events[0]["url"]).query
    params = parse_qsl(query)
    assert ("n", "buy&v=999") in params
    assert ("u", "a#b") in params
    assert [v for k, v in params if k == "v"] == ["100"]


def test_emails_need_hashing(schema: dict[str, Any]) -> None:
    """An email user id is refused, unless hashed (then its sha256 is sent)."""
    frame = rows(user=["ana@example.com"])
    _, rejects = events_and_rejects(frame, schema)
    assert [r["rule"] for r in rejects] == ["user-id-email"]
    schema["user_id"] = {"column": "user", "hash": "sha256"}
    events, rejects = events_and_rejects(frame, schema)
    assert rejects == []
    assert events[0]["u"] == hashlib.sha256(b"ana@example.com").hexdigest()


def test_impression_sets_goal_to_experiment(schema: dict[str, Any]) -> None:
    """kind = impression: g is the experiment id, as the spec's appendix says."""
    del schema["goal_ids"]
    schema["kind"] = "impression"
    frame = rows(exp=["987654321"], var=["1111111"], goals=None)
    events, _ = events_and_rejects(frame, schema)
    assert events[0]["g"] == "987654321"
    assert "&x987654321=1111111&v=100&g=987654321&d=8511325" in events[0]["url"]


def test_every_broken_rule_of_a_row_is_reported(schema: dict[str, Any], write_csv) -> None:  # type: ignore[no-untyped-def]
    """A row breaking four rules is one rejected row with four rejects, and the run goes on."""
    path = write_csv([HEADER, ",e,x1,2,g,1.999,", SPEC_ROW])
    events, rejects = events_and_rejects(path, schema)
    assert len(events) == 1
    assert sorted(r["rule"] for r in rejects) == [
        "experiment-id-digits",
        "goal-ids-format",
        "time-missing",
        "user-id-empty",
        "value-rounding",
    ]
    assert {(r["row"], r["line"]) for r in rejects} == {(1, 2)}


def test_url_too_long(schema: dict[str, Any]) -> None:
    """A request longer than checks.max_url_bytes is refused."""
    schema["checks"] = {"max_url_bytes": 200}
    frame = rows(user=["u" * 100, "u"])
    events, rejects = events_and_rejects(frame, schema)
    assert [e["row"] for e in events] == [2]
    assert [(r["row"], r["rule"]) for r in rejects] == [(1, "url-too-long")]
    # The reject says how long the request would be: the other row's, with 99 more user bytes.
    expected = len(events[0]["url"].encode()) + 99
    assert rejects[0]["value"] == f"{expected:,} bytes (limit 200)"


def test_dedupe_key_must_be_present(schema: dict[str, Any]) -> None:
    """A row without its dedupe key cannot be sent once-only, so it is refused."""
    schema["dedupe_key"] = ["order"]
    frame = rows(order=["A1", ""])
    events, rejects = events_and_rejects(frame, schema)
    assert [e["row"] for e in events] == [1]
    assert [r["rule"] for r in rejects] == ["dedupe-key-empty"]


def test_integer_parquet_ids_do_not_become_floats(schema: dict[str, Any]) -> None:
    """int64 and nullable ids are sent as written: 87654321, not 87654321.0."""
    frame = pa.table(
        {
            "user": pa.array([1316548451038], pa.int64()),
            "event": ["e"],
            "exp": pa.array([87654321], pa.int64()),
            "var": pa.array([1111111], pa.int32()),
            "goals": pa.array([1234567], pa.int64()),
            "amount": pa.array([5.0]),
            "ts": pa.array([1462472175], pa.int64()),
        }
    )
    events, rejects = events_and_rejects(frame, schema)
    assert rejects == []
    assert "u=1316548451038&x87654321=1111111&v=500&g=1234567" in events[0]["url"]


def test_preview_returns_params_and_url(schema: dict[str, Any], write_csv) -> None:  # type: ignore[no-untyped-def]
    """preview() gives a DataFrame of the parameters and URL of each valid row."""
    frame = preview(write_csv([HEADER, SPEC_ROW, SPEC_ROW]), schema=schema, n=1, now=NOW)
    assert list(frame.columns) == [
        "position",
        "file",
        "row",
        "line",
        "a",
        "n",
        "u",
        "x",
        "v",
        "g",
        "d",
        "s",
        "time",
        "currency",
        "url",
    ]
    assert len(frame) == 1
    assert frame.loc[0, "url"].endswith(SPEC_QUERY)


def test_impression_with_pairs_and_an_empty_cookie(schema: dict[str, Any]) -> None:
    """An empty cookie adds no experiment: g is the pair's id alone, with no stray comma."""
    del schema["goal_ids"]
    schema["kind"] = "impression"
    schema["buckets"] = {"column": "cookie"}
    frame = rows(exp=["987"], var=["1"], goals=None, cookie=[""])
    events, rejects = events_and_rejects(frame, schema)
    assert rejects == []
    assert events[0]["g"] == "987"


def test_repeated_experiment_is_refused(schema: dict[str, Any]) -> None:
    """The same experiment from the column and the cookie, or twice in the cookie, is refused."""
    schema["buckets"] = {"column": "cookie", "format": "json"}
    frame = rows(exp=["987", "5"], var=["1", "1"], cookie=['{"987": "2"}', '{"6": "1", "6": "2"}'])
    events, rejects = events_and_rejects(frame, schema)
    assert events == []
    assert [(r["row"], r["rule"], r["column"]) for r in rejects] == [
        (1, "experiment-duplicate", "exp"),
        (2, "buckets-invalid", "cookie"),
    ]
