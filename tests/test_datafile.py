"""Tests for importer.datafile and --datafile: loading (file, URL, dict), each datafile rule
and warning over whole columns (held to the per-event reference), keys, send, init."""

from __future__ import annotations

import copy
import csv
import http.server
import json
import signal
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jsonschema
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import importer
from importer import datafile as datafiles
from importer.api import iter_events
from importer.cli import app
from importer.collector import RunningCollector
from importer.datafile import Datafile, judge_event, load_datafile, parse_datafile
from importer.errors import SchemaError, UsageError
from importer.rules import RULES, WARNINGS, Violations

from .conftest import BASE_SCHEMA, NOW

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"
DATAFILE = SAMPLE / "datafile.json"
IDS, IDS_SCHEMA = SAMPLE / "datafile_ids.csv", ROOT / "schemas" / "datafile_ids.toml"
KEYS, KEYS_SCHEMA = SAMPLE / "datafile_keys.csv", ROOT / "schemas" / "datafile_keys.toml"
DATAFILE_RULES = {
    "project-mismatch",
    "account-mismatch",
    "experiment-unknown",
    "variation-unknown",
    "goal-unknown",
}
runner = CliRunner()

# A small project for the unit tests: two running experiments, one paused, goals attached
# to some of them.
SMALL: dict[str, Any] = {
    "version": "4",
    "projectId": "1234567",
    "accountId": "8511325",
    "revision": "7",
    "experiments": [
        {"id": "1", "key": "one", "status": "Running", "variations": [{"id": "2", "key": "a"}]},
        {
            "id": "87654321",
            "key": "spec",
            "status": "Running",
            "variations": [{"id": "1111111", "key": "control"}, {"id": "3", "key": "b"}],
        },
    ],
    "groups": [
        {
            "id": "100",
            "policy": "random",
            "experiments": [
                {
                    "id": "5",
                    "key": "paused",
                    "status": "Paused",
                    "variations": [{"id": "6", "key": "c"}],
                }
            ],
        }
    ],
    "events": [
        {"id": "3", "key": "buy", "experimentIds": ["1", "87654321"]},
        {"id": "1234567", "key": "spec_goal", "experimentIds": ["87654321"]},
        {"id": "9", "key": "lonely", "experimentIds": []},
    ],
    "attributes": [{"id": "983745985", "key": "channel"}],
}


def small(**changes: Any) -> dict[str, Any]:
    """A copy of SMALL with top-level keys replaced."""
    return {**copy.deepcopy(SMALL), **changes}


def found_by_line(source: Path, schema: Path, datafile: Any = DATAFILE) -> dict[int, set[str]]:
    """Each line's reject rules and ('warn:'-prefixed) warnings."""
    out: dict[int, set[str]] = {}
    for mapped in iter_events(str(source), schema=str(schema), datafile=datafile, now=NOW):
        for row in mapped.rejects.to_pylist():
            out.setdefault(row["line"], set()).add(row["rule"])
        for row in mapped.warnings.to_pylist():
            out.setdefault(row["line"], set()).add("warn:" + row["rule"])
    return out


def expected_by_line(source: Path) -> dict[int, set[str]]:
    """The sample file's own expect column, by line (the header is line 1)."""
    with source.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {
        i + 2: set(row["expect"].split()) - {"valid"}
        for i, row in enumerate(rows)
        if row["expect"] != "valid"
    }


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    """A table's rows as dicts."""
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def one_row(**cells: str) -> pa.Table:
    """One row with the columns of BASE_SCHEMA (a spec-like valid row), some replaced."""
    row = {"user": "u", "event": "e", "exp": "87654321", "var": "1111111", "goals": "1234567"}
    row |= {"amount": "1", "ts": "1462472175", **cells}
    return pa.table({k: [v] for k, v in row.items()})


# -- the sample files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "schema"),
    [pytest.param(IDS, IDS_SCHEMA, id="ids"), pytest.param(KEYS, KEYS_SCHEMA, id="keys")],
)
def test_each_sample_row_breaks_what_its_expect_column_says(source: Path, schema: Path) -> None:
    """Every row of the datafile test files gives exactly the rules and warnings it names."""
    assert found_by_line(source, schema) == expected_by_line(source)


def test_the_test_files_break_every_datafile_rule_and_warning() -> None:
    """Between them, the two sample files break each datafile rule and raise each warning."""
    seen = set().union(*expected_by_line(IDS).values(), *expected_by_line(KEYS).values())
    assert seen >= DATAFILE_RULES
    assert {f"warn:{w}" for w in WARNINGS} <= seen


@pytest.mark.parametrize(
    "name", ["offline_sales", "impressions", "optimizely_buckets", "payments", "shop_orders"]
)
def test_the_other_sample_files_fit_the_sample_datafile(name: str) -> None:
    """The datafile is the sample project's: with it, the samples report what they did."""
    source, schema = str(SAMPLE / f"{name}.csv"), str(ROOT / "schemas" / f"{name}.toml")
    plain = importer.check(source, schema=schema, now=NOW)
    checked = importer.check(source, schema=schema, now=NOW, datafile=DATAFILE)
    assert checked.rule_counts == plain.rule_counts and checked.accounting == plain.accounting
    assert checked.warnings == plain.warnings
    assert checked.notes[-1].startswith("datafile ") and "revision 42" in checked.notes[-1]


def test_check_reports_each_rule_as_json_that_keeps_the_contract() -> None:
    """check --datafile --json: the datafile rules, both warnings, the revision; exit 3."""
    args = ["check", str(IDS), "-s", str(IDS_SCHEMA), "--datafile", str(DATAFILE), "--json", "-q"]
    result = runner.invoke(app, args)
    data = json.loads(result.stdout)
    contract = json.loads((ROOT / "importer" / "contract" / "check.json").read_text())
    jsonschema.validate(data, contract, cls=jsonschema.Draft202012Validator)
    assert result.exit_code == data["exit_code"] == 3
    assert set(data["rejected_by_rule"]) == DATAFILE_RULES
    assert data["rejected_by_rule"]["project-mismatch"] == 2
    assert [w.split(":")[0] for w in data["warnings"]] == sorted(WARNINGS)
    assert data["warnings"][1].startswith(
        "goal-not-in-experiment: 1 row (a warning: not rejected): the goal (event) is attached"
    )
    assert data["notes"] == [
        f"datafile {DATAFILE}: revision 42 (project 1234567, account 8511325; 6 experiments, "
        "4 events, 2 attributes)"
    ]


def test_check_text_names_file_line_column_and_rule() -> None:
    """The text report shows each rule with its examples, the warnings and the revision."""
    args = ["check", str(IDS), "-s", str(IDS_SCHEMA), "--datafile", str(DATAFILE), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 3
    out = result.stdout
    assert f"      {IDS} line 8, column variation_id: '4444444'" in out
    assert f"  {'account-mismatch':<22} {1:>9,}  {RULES['account-mismatch']}" in out
    assert "warning: experiment-not-running: 1 row (a warning: not rejected): " in out
    assert f"{IDS} line 13, column experiment_id: '654321098'" in out
    assert "revision 42" in out


def test_preview_shows_the_revision_and_warnings_on_stderr() -> None:
    """preview prints URLs on stdout, and the datafile line and warnings on stderr."""
    args = ["preview", str(KEYS), "-s", str(KEYS_SCHEMA), "--datafile", str(DATAFILE)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 6
    lines = result.stderr.splitlines()
    assert lines[0] == "6 requests written; 4 rows rejected (run check to see why)"
    assert lines[1].startswith("warning: experiment-not-running: 1 row")
    assert lines[-1].startswith(f"datafile {DATAFILE}: revision 42")


def test_send_sends_none_of_the_rejected_rows(tmp_path: Path) -> None:
    """send with a datafile: exactly the valid rows (warnings included) reach the endpoint."""
    with RunningCollector() as collector:
        report = importer.send(
            str(IDS),
            schema=str(IDS_SCHEMA),
            datafile=DATAFILE,
            endpoint=collector.url,
            ledger=tmp_path / "l.sqlite",
            now=NOW,
        )
        users = {dict(parse_qsl(q))["u"] for q in collector.accepted_queries()}
    with IDS.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    sent = {
        r["customer_id"] for r in rows if r["expect"] == "valid" or r["expect"].startswith("warn:")
    }
    assert users == sent and (report.sent, report.rejected) == (6, 8)
    assert report.exit_code == 3 and report.rule_counts["experiment-unknown"] == 2
    assert len(report.warnings) == 2 and "revision 42" in report.notes[-1]
    as_json = report.to_dict()
    assert as_json["datafile"]["revision"] == "42"
    warned = [r["expect"].removeprefix("warn:") for r in rows if r["expect"].startswith("warn:")]
    expected = Counter(warned)
    assert as_json["warned_by_rule"] == dict(expected)
    runs = importer.status(ledger=tmp_path / "l.sqlite")
    assert runs["datafile_revision"].tolist() == ["42"]  # recorded in the run


# -- keys --------------------------------------------------------------------------------------


def test_keys_resolve_to_the_ids_the_event_api_takes() -> None:
    """Experiment, variation and event keys and an attribute key become x, g and s ids."""
    frame = importer.preview(str(KEYS), schema=str(KEYS_SCHEMA), datafile=DATAFILE, n=3, now=NOW)
    assert frame[["x", "g", "s"]].values.tolist() == [
        ["x987654321=1111112", "12345", "s983745985=in_store"],
        ["x20250101=302", "5550001", "s983745985=web"],
        ["x876543210=3333333", "4324234", "s983745985=curbside"],
    ]


def test_keys_without_a_datafile_are_a_usage_error() -> None:
    """A schema naming things by key needs --datafile: exit 2, nothing read, no traceback."""
    result = runner.invoke(app, ["check", str(KEYS), "-s", str(KEYS_SCHEMA), "-q"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {KEYS_SCHEMA}: key 'experiments[0].experiment_key_column': names things by "
        "key, and keys are resolved through the project's datafile (also "
        "experiments[0].variation_key_column, goal_ids.event_key_column, "
        "segments[0].attribute_key): pass --datafile PATH_OR_URL (in Python: datafile=...), "
        "or use ids\n"
    )


def test_a_constant_event_key_and_attribute_key_resolve(schema: dict[str, Any]) -> None:
    """goal_ids.event_key and segments[].attribute_key are looked up once."""
    schema["goal_ids"] = {"event_key": "spec_goal"}
    schema["segments"] = [{"attribute_key": "channel", "value": "gc"}]
    frame = importer.preview(one_row(), schema=schema, datafile=SMALL, now=NOW)
    assert frame[["g", "s"]].values.tolist() == [["1234567", "s983745985=gc"]]


@pytest.mark.parametrize(
    ("change", "key", "said"),
    [
        pytest.param(
            {"project_id": {"value": "7654321"}},
            "project_id.value",
            "7654321 is not the datafile's projectId 1234567",
            id="project",
        ),
        pytest.param(
            {"account_id": {"value": "1"}},
            "account_id.value",
            "1 is not the datafile's accountId 8511325",
            id="account",
        ),
        pytest.param(
            {"experiments": [{"experiment": "4", "variation_column": "var"}]},
            "experiments[0].experiment",
            "4 is not an experiment",
            id="experiment",
        ),
        pytest.param(
            {"experiments": [{"experiment": "1", "variation": "3"}]},
            "experiments[0].variation",
            "3 is not a variation of 1",
            id="variation",
        ),
        pytest.param(
            {"goal_ids": {"value": "3,4"}}, "goal_ids.value", "4 is not an event", id="goal"
        ),
    ],
)
def test_a_constant_the_datafile_lacks_is_refused_before_reading(
    schema: dict[str, Any], change: dict[str, Any], key: str, said: str
) -> None:
    """Constants are checked once, like a too long project id: every row would be rejected."""
    schema.update(change)
    with pytest.raises(SchemaError) as caught:
        importer.check(one_row(), schema=schema, datafile=SMALL)
    assert str(caught.value).startswith(f"<schema>: key '{key}': {said} (datafile <datafile>: ")
    assert "every row would be rejected" in str(caught.value)


@pytest.mark.parametrize(
    ("change", "key", "said"),
    [
        pytest.param(
            {"goal_ids": {"event_key": "sell"}},
            "goal_ids.event_key",
            "'sell' is not an event key of the datafile <datafile>",
            id="event",
        ),
        pytest.param(
            {"segments": [{"attribute_key": "chanel", "column": "user"}]},
            "segments[0].attribute_key",
            "'chanel' is not an attribute key of the datafile <datafile>",
            id="attribute",
        ),
    ],
)
def test_a_constant_key_the_datafile_lacks_is_a_schema_error(
    schema: dict[str, Any], change: dict[str, Any], key: str, said: str
) -> None:
    """A constant key that does not resolve names the key and lists the datafile's keys."""
    schema.update(change)
    with pytest.raises(SchemaError) as caught:
        importer.check(one_row(), schema=schema, datafile=SMALL)
    assert str(caught.value).startswith(f"<schema>: key '{key}': {said}")


@pytest.mark.parametrize(
    ("part", "said"),
    [
        pytest.param(
            {
                "experiments": [
                    {
                        "experiment_column": "e",
                        "experiment_key_column": "k",
                        "variation_column": "v",
                    }
                ]
            },
            "give exactly one of 'experiment', 'experiment_column' or 'experiment_key_column'",
            id="experiment",
        ),
        pytest.param(
            {"goal_ids": {"column": "g", "event_key": "buy"}},
            "give exactly one of 'column', 'value', 'event_key' or 'event_key_column'",
            id="goal",
        ),
        pytest.param(
            {"segments": [{"id": "1", "attribute_key": "a", "value": "x"}]},
            "give exactly one of 'id' or 'attribute_key'",
            id="segment",
        ),
    ],
)
def test_schema_takes_an_id_or_a_key_not_both(
    schema: dict[str, Any], part: dict[str, Any], said: str
) -> None:
    """Each field names its id one way."""
    with pytest.raises(SchemaError, match=said):
        importer.Schema(**{**schema, **part})


# -- the vectorized checks against the reference ------------------------------------------------

EXPERIMENTS_SEEN = ["1", "5", "87654321", "4", "9"]  # known, paused, known, unknown, unknown
VARIATIONS_SEEN = ["2", "3", "6", "1111111", "4", "2_3", "1111111_3", "3_1111111"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["1234567", "7654321"]),
            st.sampled_from(["8511325", "1"]),
            st.sampled_from(EXPERIMENTS_SEEN),
            st.sampled_from(VARIATIONS_SEEN),
            st.sampled_from(["", *EXPERIMENTS_SEEN]),
            st.sampled_from(["3", "9", "1234567", "4", "3,9", "9,3", "3,1234567"]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_whole_columns_judge_as_the_per_event_reference(rows: list[tuple[str, ...]]) -> None:
    """Rules and warnings of each row, mapped over whole columns, equal judge_event's.

    Rows carry one or two pairs (the second optional) and one or more goals.
    """
    schema = {
        **BASE_SCHEMA,
        "project_id": {"column": "a"},
        "account_id": {"column": "d"},
        "experiments": [
            {"experiment_column": "exp", "variation_column": "var"},
            {"experiment_column": "exp2", "variation_column": "var2", "required": False},
        ],
        "segments": [],
    }
    table = pa.table(
        {
            "a": [r[0] for r in rows],
            "d": [r[1] for r in rows],
            "exp": [r[2] for r in rows],
            "var": [r[3] for r in rows],
            "exp2": [r[4] for r in rows],
            "var2": ["2" if r[4] else "" for r in rows],
            "goals": [r[5] for r in rows],
            "user": ["u"] * len(rows),
            "event": ["e"] * len(rows),
            "amount": ["1"] * len(rows),
            "ts": ["1462472175"] * len(rows),
        }
    )
    loaded = load_datafile(SMALL)
    got: dict[int, set[str]] = {}
    for mapped in iter_events(table, schema=schema, datafile=loaded, now=NOW):
        for r in mapped.rejects.to_pylist():
            got.setdefault(r["row"], set()).add(r["rule"])
        for r in mapped.warnings.to_pylist():
            got.setdefault(r["row"], set()).add("warn:" + r["rule"])
    want: dict[int, set[str]] = {}
    for i, (a, d, exp, var, exp2, goals) in enumerate(rows, start=1):
        pairs = [(exp, var)] + ([(exp2, "2")] if exp2 else [])
        judged = judge_event(
            loaded, project_id=a, account_id=d, pairs=pairs, goals=goals.split(",")
        )
        rejects = set(judged.rejects) | ({"experiment-duplicate"} if exp2 == exp else set())
        found = rejects or {f"warn:{w}" for w in judged.warnings}  # only sent rows warn
        if found:
            want[i] = found
    assert got == want


def test_a_goal_counts_when_attached_to_any_experiment_of_the_row() -> None:
    """goal-not-in-experiment: per goal, over every experiment of the row (cookie included)."""
    cookie = "%7B%221%22%3A%222%22%2C%2287654321%22%3A%223%22%7D"  # {"1":"2","87654321":"3"}
    schema = {**BASE_SCHEMA, "experiments": [], "buckets": {"column": "cookie"}, "segments": []}
    table = pa.table(
        {
            "cookie": [cookie, cookie, "%7B%221%22%3A%222%22%7D", "%7B%225%22%3A%226%22%7D"],
            "goals": ["1234567", "9", "1234567", "3"],
            "user": ["u"] * 4,
            "event": ["e"] * 4,
            "amount": ["1"] * 4,
            "ts": ["1462472175"] * 4,
        }
    )
    mapped = next(iter_events(table, schema=schema, datafile=SMALL, now=NOW))
    assert mapped.rejects.num_rows == 0
    warned = {(r["row"], r["rule"]) for r in rows_of(mapped.warnings)}
    assert warned == {
        (2, "goal-not-in-experiment"),  # 9 is attached to no experiment
        (3, "goal-not-in-experiment"),  # 1234567 is attached to 87654321 only, not to 1
        (4, "experiment-not-running"),  # 5 is paused (an experiment of a group)
        (4, "goal-not-in-experiment"),  # 3 is attached to 1 and 87654321, not to 5
    }


def test_a_cookie_naming_an_unknown_experiment_or_variation_is_rejected() -> None:
    """The cookie's pairs are judged once per distinct cookie, on the cookie's column."""
    schema = {**BASE_SCHEMA, "experiments": [], "buckets": {"column": "cookie"}, "segments": []}
    table = pa.table(
        {
            "cookie": ["%7B%224%22%3A%222%22%7D", "%7B%221%22%3A%223%22%7D"],
            "goals": ["3", "3"],
            "user": ["u"] * 2,
            "event": ["e"] * 2,
            "amount": ["1"] * 2,
            "ts": ["1462472175"] * 2,
        }
    )
    mapped = next(iter_events(table, schema=schema, datafile=SMALL, now=NOW))
    assert [(r["row"], r["rule"], r["column"]) for r in rows_of(mapped.rejects)] == [
        (1, "experiment-unknown", "cookie"),
        (2, "variation-unknown", "cookie"),
    ]


def test_a_warning_is_a_known_code() -> None:
    """Warnings have their own registry; a reject code is not a warning, nor the reverse."""
    found = Violations(1)
    with pytest.raises(KeyError):
        found.warn(np.array([True]), "goal-unknown", "c", None)
    with pytest.raises(KeyError):
        found.add(np.array([True]), "goal-not-in-experiment", "c", None)
    assert not set(WARNINGS) & set(RULES)


def test_readme_lists_every_warning_with_its_message() -> None:
    """The README's warnings table is the WARNINGS registry."""
    readme = (ROOT / "README.md").read_text()
    for code, message in WARNINGS.items():
        assert f"| `{code}` | {message} |" in readme


# -- reading a datafile -------------------------------------------------------------------------


def test_experiments_come_from_groups_and_rollouts_too() -> None:
    """As in the python-sdk's ProjectConfig: experiments, rollouts' rules, groups'."""
    data = small(
        rollouts=[
            {
                "id": "r",
                "experiments": [
                    {
                        "id": "77",
                        "key": "rule",
                        "status": "Running",
                        "variations": [{"id": "78", "key": "on"}],
                    }
                ],
            }
        ]
    )
    loaded = parse_datafile(data)
    assert [e.id for e in loaded.experiments] == ["1", "87654321", "77", "5"]
    assert loaded.revision == "7" and loaded.attributes == {"channel": "983745985"}


def test_a_version_1_datafile_takes_segment_ids_from_dimensions() -> None:
    """Old datafiles list attributes as dimensions with a segmentId."""
    data = small(attributes=[], dimensions=[{"id": "1", "key": "browser", "segmentId": "2"}])
    assert parse_datafile(data).attributes == {"browser": "2"}


@pytest.mark.parametrize(
    ("data", "said"),
    [
        pytest.param(
            small(projectId=None), "key 'projectId': missing or not a string", id="no-project"
        ),
        pytest.param(
            small(accountId="85-11"),
            "key 'accountId': not digits: '85-11'",
            id="account-not-digits",
        ),
        pytest.param(
            small(experiments={"id": "1"}),
            "key 'experiments': expected a list, got dict",
            id="experiments-not-list",
        ),
        pytest.param(
            small(experiments=[{"id": "1", "key": "k", "variations": [{"key": "a"}]}]),
            "key 'experiments[0].variations[0].id': missing or not a string",
            id="variation-without-id",
        ),
        pytest.param(
            small(groups=[{"experiments": [7]}]),
            "key 'groups[0].experiments[0]': expected an object, got int",
            id="group-experiment",
        ),
        pytest.param(
            small(events=[{"id": "3", "key": "k", "experimentIds": "1"}]),
            "key 'events[0].experimentIds': expected a list of experiment ids",
            id="event-links",
        ),
    ],
)
def test_a_malformed_datafile_names_the_key(data: dict[str, Any], said: str) -> None:
    """Each problem names the datafile and the key, and says what to pass."""
    with pytest.raises(UsageError) as caught:
        parse_datafile(data, origin="d.json")
    assert str(caught.value) == (
        f"datafile d.json: {said}. Pass the project's datafile (the JSON the Optimizely SDKs "
        "download)."
    )


@pytest.mark.parametrize(
    ("content", "said"),
    [
        pytest.param(None, "file not found.", id="missing"),
        pytest.param(
            b'{"projectId": "1",\n  oops}',
            "not valid JSON (line 2, column 3: Expecting property name enclosed in double quotes).",
            id="invalid-json",
        ),
        pytest.param(b"[1, 2]", "a JSON list, not an object.", id="a-list"),
        pytest.param(b"\xff\xfe\xfa", "not JSON text (not UTF-8).", id="binary"),
    ],
)
def test_a_datafile_that_cannot_be_read_says_why(
    tmp_path: Path, content: bytes | None, said: str
) -> None:
    """File problems are usage errors naming the file."""
    path = tmp_path / "datafile.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UsageError) as caught:
        load_datafile(path)
    assert str(caught.value).startswith(f"datafile {path}: {said}")


def test_a_datafile_given_twice_ways_is_the_same(tmp_path: Path) -> None:
    """A path, a dict and a loaded Datafile give the same datafile."""
    path = tmp_path / "d.json"
    path.write_text(json.dumps(SMALL))
    from_path = load_datafile(str(path))
    assert load_datafile(from_path) is from_path
    assert load_datafile(SMALL).experiments == from_path.experiments
    assert isinstance(from_path, Datafile) and from_path.source == str(path)


# -- a datafile URL, from a real local server ----------------------------------------------------


class _Server:
    """An HTTP server on 127.0.0.1 answering a few paths; counts the requests per path."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.release = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
                if self.path == "/slow.json":
                    owner.release.wait(10)  # longer than any client waits
                    return
                if self.path == "/datafile.json":
                    self._answer(200, json.dumps(SMALL).encode())
                elif self.path == "/broken.json":
                    self._answer(200, b"<html>maintenance</html>")
                else:
                    self._answer(404, b"not found")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[_Server]:
    """A local HTTP server serving the small datafile (and some broken answers)."""
    running = _Server()
    try:
        yield running
    finally:
        running.close()


def test_a_datafile_url_is_fetched_once(server: _Server, schema: dict[str, Any]) -> None:
    """check --datafile URL: one GET, and the report names the URL and revision."""
    url = f"{server.url}/datafile.json"
    report = importer.check(one_row(), schema=schema, datafile=url, now=NOW)
    assert server.hits == {"/datafile.json": 1}
    assert report.valid == 1 and report.notes == [
        f"datafile {url}: revision 7 (project 1234567, account 8511325; 3 experiments, "
        "3 events, 1 attributes)"
    ]


@pytest.fixture
def own_signals() -> Iterator[None]:
    """The CLI's send installs SIGINT/SIGTERM handlers: give pytest its own back after."""
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in kept.items():
            signal.signal(signum, handler)


@pytest.mark.usefixtures("own_signals")
def test_send_on_the_command_line_fetches_the_url_once(server: _Server, tmp_path: Path) -> None:
    """send --datafile URL --sandbox: the URL is fetched once for the whole command."""
    data = tmp_path / "in.csv"
    data.write_text(
        "user,event,exp,var,goals,amount,ts\nu,e,87654321,1111111,1234567,1,1462472175\n"
    )
    schema = tmp_path / "s.toml"
    schema.write_text(
        'project_id = { value = "1234567" }\naccount_id = { value = "8511325" }\n'
        'user_id = { column = "user" }\nevent_name = { column = "event" }\n'
        '[[experiments]]\nexperiment_column = "exp"\nvariation_column = "var"\n'
        '[goal_ids]\ncolumn = "goals"\n[time]\ncolumn = "ts"\n'
    )
    args = ["send", str(data), "-s", str(schema), "--datafile", f"{server.url}/datafile.json"]
    result = runner.invoke(app, [*args, "--sandbox", "--no-ledger", "--json", "-q"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["sent"] == 1
    assert server.hits == {"/datafile.json": 1}


@pytest.mark.parametrize(
    ("path", "said"),
    [
        pytest.param(
            "/gone.json",
            "the server answered 404 Not Found; check the URL (and the SDK "
            "key in it), or download the datafile and pass its path",
            id="404",
        ),
        pytest.param(
            "/broken.json",
            "not valid JSON (line 1, column 1: Expecting value). Pass the project's datafile",
            id="not-json",
        ),
    ],
)
def test_a_datafile_url_that_fails_says_why_without_a_traceback(
    server: _Server, tmp_path: Path, path: str, said: str
) -> None:
    """On the command line: exit 2 and one line naming the URL, before any row is read."""
    url = server.url + path
    args = ["check", str(IDS), "-s", str(IDS_SCHEMA), "--datafile", url, "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: datafile {url}: {said}")
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_a_silent_datafile_server_times_out(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No answer within the timeout: a usage error saying so (library and command line)."""
    url = f"{server.url}/slow.json"
    with pytest.raises(UsageError) as caught:
        load_datafile(url, timeout=0.3)
    assert str(caught.value) == (
        f"datafile {url}: no complete answer within 0.3 s; check the URL and the network, or "
        "download the datafile and pass its path"
    )
    monkeypatch.setattr(datafiles, "DEFAULT_TIMEOUT", 0.3)
    result = runner.invoke(app, ["check", str(IDS), "-s", str(IDS_SCHEMA), "--datafile", url])
    assert result.exit_code == 2
    assert result.stderr == f"error: {caught.value}\n"


def test_a_refused_connection_and_other_schemes_are_usage_errors(tmp_path: Path) -> None:
    """Nothing listening, or not http(s): clear messages."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/datafile.json"
    with pytest.raises(UsageError, match=r"cannot fetch it: .*refused"):
        load_datafile(url, timeout=2)
    with pytest.raises(UsageError, match="only http and https URLs can be fetched"):
        load_datafile("ftp://example.com/datafile.json")


# -- init -----------------------------------------------------------------------------------------


def test_init_recognises_key_columns_with_a_datafile(tmp_path: Path) -> None:
    """init --datafile: key columns, the event key as goal, an attribute column, the ids."""
    out = tmp_path / "keys.toml"
    args = ["init", str(KEYS), "-o", str(out), "--datafile", str(DATAFILE), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    text = out.read_text()
    for line in (
        'project_id = { value = "1234567" }',
        'account_id = { value = "8511325" }',
        'experiment_key_column = "experiment"',
        'variation_key_column = "variation"',
        'event_key_column = "event"',
        'attribute_key = "channel"',
        f"--datafile {DATAFILE}",
    ):
        assert line in text, line
    assert json.loads(result.stdout)["todos"] == []
    assert result.stderr.endswith(
        f"next: event-backfill check {KEYS} --schema {out} --datafile {DATAFILE}\n"
    )
    # The guess checks the file as the shipped schema does, but for the row without an
    # experiment: init adds a filter for such rows (filtered, not rejected).
    shipped = found_by_line(KEYS, KEYS_SCHEMA)
    assert shipped.pop(10) == {"experiment-missing"}
    assert found_by_line(KEYS, out) == shipped


def test_init_without_a_datafile_is_unchanged() -> None:
    """No datafile, no keys: the key columns are not guessed."""
    guess = importer.guess_schema(str(KEYS))
    assert "key_column" not in guess.text and "project_id.value" in guess.todos


def test_large_projects_look_links_up_in_a_sorted_array(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above DENSE_LINKS pairs the links are searched, not indexed: same answers."""
    dense = datafiles.Lookup(load_datafile(SMALL))
    monkeypatch.setattr(datafiles, "DENSE_LINKS", 0)
    sparse = datafiles.Lookup(load_datafile(SMALL))
    assert dense.attached is not None and sparse.attached is None
    rng = np.random.default_rng(5)
    for _ in range(20):
        goals = datafiles.Flat(np.sort(rng.integers(0, 8, 12)), rng.integers(0, 3, 12))
        experiments = datafiles.Flat(rng.integers(0, 8, 6), rng.integers(0, 3, 6))
        assert (
            dense.lost_goals(goals, experiments, 8) == sparse.lost_goals(goals, experiments, 8)
        ).all()


def test_the_receipt_says_which_sent_events_will_not_count(tmp_path: Path) -> None:
    """goal-not-in-experiment rows are sent and in the receipt: the report says the results
    page will not count them (a newcomer compared the two and found the gap unexplained)."""
    with RunningCollector() as collector:
        report = importer.send(
            str(IDS),
            schema=str(IDS_SCHEMA),
            datafile=DATAFILE,
            endpoint=collector.url,
            ledger=tmp_path / "l.sqlite",
            now=NOW,
        )
    n = report.warned_by_rule["goal-not-in-experiment"]
    text = report.render()
    receipt_at = text.index("receipt of run")
    caveat = f"{n:,} of these events were sent with a goal not attached to an experiment"
    assert caveat in text[receipt_at:]
