"""Hardening: host-sized project ids, emails in any form, masked rejects, per-field characters."""

from __future__ import annotations

import csv
import hashlib
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importer import check, encode
from importer.errors import SchemaError
from importer.mapping import as_text
from importer.preflight import check_host
from importer.rules import Violations
from importer.schema import ValueField
from importer.values import parse_values

from .conftest import BASE_SCHEMA, NOW
from .test_mapping import events_and_rejects, rows

# Unicode categories no text field may send: controls, format (zero-width, BOM, soft
# hyphen...), line and paragraph separators, surrogates, private use, unassigned.
FORBIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


def rules_of(rejects: list[dict[str, Any]]) -> list[str]:
    return sorted(r["rule"] for r in rejects)


def visible(text: str) -> bool:
    """At least one letter, number, punctuation or symbol."""
    return any(unicodedata.category(c)[0] in "LNPS" for c in text)


# -- 6: a project id must fit in a host name --------------------------------------------

LONG_SUFFIX = "." + ".".join(["a" * 60] * 3) + ".example.com"  # 195 bytes after the id


@pytest.mark.parametrize(
    ("endpoint", "limit"),
    [
        pytest.param(None, 63, id="default-endpoint"),
        pytest.param("https://p{project_id}.log.example.com/event", 62, id="prefixed-label"),
        # The id's label could hold 63 digits, but the whole host name only 253 bytes.
        pytest.param(
            f"https://{{project_id}}{LONG_SUFFIX}/event",
            253 - len(LONG_SUFFIX),
            id="host-name-253",
        ),
    ],
)
def test_project_id_too_long_for_the_host_is_rejected(
    schema: dict[str, Any], endpoint: str | None, limit: int
) -> None:
    """The longest project id the host holds passes; one more digit is project-id-length."""
    schema["project_id"] = {"column": "project"}
    if endpoint:
        schema["endpoint"] = endpoint
    frame = rows(project=["7" * limit, "7" * (limit + 1), "7" * 200])
    events, rejects = events_and_rejects(frame, schema)
    assert [e["row"] for e in events] == [1]
    assert [(r["row"], r["rule"]) for r in rejects] == [
        (2, "project-id-length"),
        (3, "project-id-length"),
    ]
    host = urlsplit(events[0]["url"]).hostname
    assert host is not None
    check_host(host)  # what send's preflight would refuse never gets this far


def test_project_id_outside_the_host_has_no_length_limit(schema: dict[str, Any]) -> None:
    """Without {project_id} in the host, a long project id is only the a parameter."""
    schema["project_id"] = {"column": "project"}
    schema["endpoint"] = "http://127.0.0.1:8765/event"
    events, rejects = events_and_rejects(rows(project=["7" * 80]), schema)
    assert rejects == []
    assert events[0]["a"] == "7" * 80


def test_constant_project_id_too_long_for_the_host_is_a_schema_error(
    schema: dict[str, Any],
) -> None:
    """A constant project id that cannot fit the host is refused before a row is read."""
    schema["project_id"] = {"value": "7" * 64}
    with pytest.raises(SchemaError, match=r"project_id\.value"):
        events_and_rejects(rows(), schema)


# -- 12: emails in every form are detected ----------------------------------------------

EMAIL_FORMS = [
    "bob@example.com",
    "Bob <bob@example.com>",
    '"bob smith"@example.com',
    "bob\uff20example.com",  # fullwidth @
    "bob\ufe6bexample.com",  # small @
    "bob%40example.com",
    "BOB%40EXAMPLE.COM",
    "bob%2540example.com",  # encoded twice
    "bob&#64;example.com",
    "mailto:bob@example.com",
    "bob (at) example (dot) com",
    "bob[at]example.com",
    "bob\uff20example\uff0ecom",  # fullwidth @ and dot
    "bob@m\u00fcller.de",
    "customer bob@example.com",
]


@pytest.mark.parametrize("user", EMAIL_FORMS)
def test_emails_in_any_form_are_refused_without_hashing(schema: dict[str, Any], user: str) -> None:
    """An email anywhere in the cell, however written, is user-id-email when not hashed."""
    events, rejects = events_and_rejects(rows(user=[user]), schema)
    assert events == []
    assert "user-id-email" in rules_of(rejects)


@pytest.mark.parametrize("user", ["CUST-aB7", "user@123", "@handle", "a#b", "team@localhost"])
def test_ids_that_are_not_emails_pass(schema: dict[str, Any], user: str) -> None:
    """An @ alone does not make an email: no domain with a dot, no email."""
    events, rejects = events_and_rejects(rows(user=[user]), schema)
    assert rejects == []
    assert events[0]["u"] == user


@pytest.mark.parametrize(
    "user", ["Bob <BOB@Example.com>", "BOB%40EXAMPLE.COM", "Bob\uff20Example.com"]
)
def test_auto_normalisation_lower_cases_what_it_detects(schema: dict[str, Any], user: str) -> None:
    """With hashing, every form detected as an email is lower-cased before hashing."""
    schema["user_id"] = {"column": "user", "hash": "sha256"}
    events, rejects = events_and_rejects(rows(user=[user, "CUST-aB7"]), schema)
    assert rejects == []
    assert [e["u"] for e in events] == [
        hashlib.sha256(user.lower().encode()).hexdigest(),
        hashlib.sha256(b"CUST-aB7").hexdigest(),
    ]


# -- 13: rejected email-like ids are masked in every output -----------------------------


def outputs(
    tmp_path: Path, schema: dict[str, Any], users: list[str]
) -> tuple[list[str], list[str], list[str], list[str]]:
    """The user-id values of the report's examples, report.rejects, the --rejects file and
    the --rejects-rows messages."""
    rejects_file = tmp_path / "rejects.csv"
    rows_file = tmp_path / "rows.csv"
    report = check(
        rows(user=users), schema=schema, rejects=rejects_file, rejects_rows=rows_file, now=NOW
    )
    examples = [
        e["value"] for said in report.examples.values() for e in said if e["column"] == "user"
    ]
    frame = report.rejects
    in_frame = list(frame[frame["column"] == "user"]["value"])
    with rejects_file.open(newline="") as handle:
        in_file = [r["value"] for r in csv.DictReader(handle) if r["column"] == "user"]
    with rows_file.open(newline="") as handle:
        messages = [r["messages"] for r in csv.DictReader(handle)]
    return examples, in_frame, in_file, messages


def test_rejected_email_is_masked_with_hashing(tmp_path: Path, schema: dict[str, Any]) -> None:
    """A hashed id rejected for a tab never shows its address: e***@example.com everywhere."""
    schema["user_id"] = {"column": "user", "hash": "sha256"}
    examples, in_frame, in_file, messages = outputs(tmp_path, schema, ["eve\t@example.com"])
    assert examples == in_frame == in_file == ["e***@example.com"]
    assert len(messages) == 1
    assert "e***@example.com" in messages[0]
    assert "eve" not in messages[0]


def test_rejected_emails_are_masked_without_hashing(tmp_path: Path, schema: dict[str, Any]) -> None:
    """Emails refused as user-id-email show the first character and the domain only."""
    users = ["Bob <bob@example.com>", "ana.smith@example.org", "carl%40example.net", "x\ty"]
    examples, in_frame, in_file, messages = outputs(tmp_path, schema, users)
    masked = ["B***@example.com", "a***@example.org", "c***@example.net", "x\ty"]
    assert in_frame == in_file == masked
    assert set(examples) <= set(masked)
    joined = " ".join(messages)
    for secret in ("bob@", "Bob <", "ana.smith", "carl%40"):
        assert secret not in joined
    assert "x\\ty" in joined  # an id that is no email is shown as it is


def test_emails_are_shown_when_allowed(tmp_path: Path, schema: dict[str, Any]) -> None:
    """With user_id.allow_email = true the user asked to see them: rejects show them raw."""
    schema["user_id"] = {"column": "user", "hash": "sha256", "allow_email": True}
    examples, in_frame, in_file, _ = outputs(tmp_path, schema, ["eve\t@example.com"])
    assert examples == in_frame == in_file == ["eve\t@example.com"]


# -- 14: accepted characters per field --------------------------------------------------

INVISIBLE_INSIDE = [
    "a\u0085b",  # NEL
    "a\u2028b",  # line separator
    "a\u2029b",  # paragraph separator
    "a\u200bb",  # zero-width space
    "a\ufeffb",  # BOM
    "a\u00adb",  # soft hyphen
    "a\u200eb",  # left-to-right mark
    "a\x80b",  # C1 control
    "a\ue000b",  # private use
    "a\u0378b",  # unassigned
    "a\tb",
]


@pytest.mark.parametrize("text", INVISIBLE_INSIDE)
def test_control_and_invisible_characters_are_refused(schema: dict[str, Any], text: str) -> None:
    """User ids, event names and segment values refuse Cc, Cf, Zl, Zp, Co and Cn."""
    schema["segments"] = [{"id": "983745985", "column": "seg"}]
    frame = rows(user=[text, "u"], event=["e", text], seg=["s", "s"])
    frame = frame.append_column("seg2", pa.array([text, "s"]))
    schema["segments"].append({"id": "7", "column": "seg2"})
    events, rejects = events_and_rejects(frame, schema)
    assert events == []
    assert sorted((r["row"], r["rule"]) for r in rejects) == [
        (1, "segment-control"),
        (1, "user-id-control"),
        (2, "event-name-control"),
    ]


@pytest.mark.parametrize("text", ["\u200b", "\ufeff\u200b", "\u0301", "\u3164"])
def test_cells_without_a_visible_character_are_empty(schema: dict[str, Any], text: str) -> None:
    """A user id or event name with nothing visible is empty (and refused)."""
    events, rejects = events_and_rejects(rows(user=[text, "u"], event=["e", text]), schema)
    assert events == []
    said = {(r["row"], r["rule"]) for r in rejects}
    assert {(1, "user-id-empty"), (2, "event-name-empty")} <= said


@pytest.mark.parametrize(
    "amount", ["\uff11\uff12", "\uff11\uff12.50", "\u0661\u0662", "\u09e7\u09e8", "1\uff12"]
)
def test_non_ascii_digits_are_not_a_value(schema: dict[str, Any], amount: str) -> None:
    """A fullwidth or Arabic-Indic amount is value-format, not v=1200."""
    events, rejects = events_and_rejects(rows(amount=[amount]), schema)
    assert events == []
    assert rules_of(rejects) == ["value-format"]


@pytest.mark.parametrize("goals", ["12 ,34", "12, 34", "12 34", "\uff11\uff12", "12,,34", "12,"])
def test_goal_ids_are_ascii_digits_and_commas_only(schema: dict[str, Any], goals: str) -> None:
    """Nothing but digits and commas inside the cell: '12 ,34' is goal-ids-format."""
    events, rejects = events_and_rejects(rows(goals=[goals]), schema)
    assert events == []
    assert rules_of(rejects) == ["goal-ids-format"]


def test_goal_ids_cell_is_still_trimmed(schema: dict[str, Any]) -> None:
    """Whitespace around the cell goes, as for every cell."""
    events, rejects = events_and_rejects(rows(goals=["  12,34 "]), schema)
    assert rejects == []
    assert events[0]["g"] == "12,34"


@pytest.mark.parametrize(
    ("column", "cell", "rule"),
    [
        ("exp", "\uff18\uff17", "experiment-id-digits"),
        ("exp", "\u0668\u0667", "experiment-id-digits"),
        ("var", "\uff11", "variation-id-format"),
        ("var", "1_\uff12", "variation-id-format"),
        ("project", "\uff11\uff12", "project-id-digits"),
        ("account", "\uff11\uff12", "account-id-digits"),
        ("account", "12\u200b", "account-id-digits"),
    ],
)
def test_ids_are_ascii_digits_only(
    schema: dict[str, Any], column: str, cell: str, rule: str
) -> None:
    """Experiment, variation, project and account ids: fullwidth digits are refused."""
    schema["project_id"] = {"column": "project"}
    schema["account_id"] = {"column": "account"}
    cells: dict[str, list[Any]] = {"project": ["1"], "account": ["2"], column: [cell]}
    events, rejects = events_and_rejects(rows(**cells), schema)
    assert events == []
    assert rules_of(rejects) == [rule]


# -- properties over arbitrary Unicode --------------------------------------------------

ODD = "\u0085\u2028\u2029\u200b\ufeff\u00ad\u0301\u3164\uff20@%\t .\uff11\u0661"
TEXT = st.text(st.one_of(st.characters(codec="utf-8"), st.sampled_from(ODD)), max_size=12)


def sent_param(url: str, name: str) -> str:
    """The raw (still percent-encoded) value of a parameter in a URL."""
    for pair in urlsplit(url).query.split("&"):
        key, _, value = pair.partition("=")
        if key == name:
            return value
    raise AssertionError(f"no {name} in {url}")


def assert_clean(texts: list[str], column: str, param: str, schema: dict[str, Any]) -> None:
    events, rejects = events_and_rejects(rows(**{column: texts}), schema)
    rejected = {r["row"] for r in rejects}
    assert len(events) + len(rejected) == len(texts)
    for event in events:
        value = event[param]
        assert not any(unicodedata.category(c) in FORBIDDEN for c in value), ascii(value)
        assert visible(value), ascii(value)
        assert value in texts[event["row"] - 1]
        assert sent_param(event["url"], param) == encode.quote(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TEXT, min_size=1, max_size=8))
def test_any_user_id_is_refused_or_sent_clean(texts: list[str]) -> None:
    """For any text: rejected, or u has no forbidden character and something visible."""
    assert_clean(texts, "user", "u", dict(BASE_SCHEMA))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TEXT, min_size=1, max_size=8))
def test_any_event_name_is_refused_or_sent_clean(texts: list[str]) -> None:
    """The same for the event name."""
    assert_clean(texts, "event", "n", dict(BASE_SCHEMA))


VALUE_OPTIONS = [
    {"scale": 100, "thousands_separator": ",", "strip": "$\u20ac "},
    {"scale": 100, "thousands_separator": ".", "decimal_separator": ",", "allow_negative": True},
]


# Number-like text, with digits of other scripts (fullwidth, Arabic-Indic, Bengali) and
# spaces of other kinds among the ASCII ones, or any text at all.
NUMBERISH = "0123456789,.+-eE$\u20ac \uff11\uff12\u0661\u09e7\u00a0\u2009"
VALUE_CELL = st.one_of(
    st.text(st.sampled_from(NUMBERISH), max_size=10),
    st.text(st.one_of(st.characters(codec="utf-8"), st.sampled_from(NUMBERISH))),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(VALUE_CELL, min_size=1, max_size=8), st.sampled_from(VALUE_OPTIONS))
def test_accepted_value_cells_hold_only_allowed_characters(
    cells: list[str], options: dict[str, Any]
) -> None:
    """A value cell that is accepted holds ASCII digits, separators, sign, strip characters
    (and an exponent's e) only."""
    spec = ValueField(column="amount", **options)
    trimmed = as_text(pa.array(cells, pa.string()))
    found = Violations(len(cells))
    values = parse_values(trimmed, None, spec, found).to_pylist()
    allowed = set("0123456789+-eE") | set(spec.strip) | {spec.decimal_separator}
    allowed |= {spec.thousands_separator} if spec.thousands_separator else set()
    for cell, value in zip(trimmed.to_pylist(), values, strict=True):
        if value is not None:
            assert set(cell) <= allowed, ascii(cell)
