"""Row filters, cell extraction, user id normalisation, the time window, money per currency."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import importer
from importer.cli import app
from importer.errors import SchemaError
from importer.schema import json_schema_text, load_schema

from .conftest import HEADER, NOW
from .helpers import schema_toml_text

runner = CliRunner()

STATUS_HEADER = HEADER + ",status"


def row(
    user: str = "u1", amount: str = "5.00", ts: str = "1462472175", status: str = "Paid"
) -> str:
    """One CSV line of the base layout with a status column."""
    return f"{user},purchase,87654321,1111111,1234567,{amount},{ts},{status}"


def filtered_check(schema: dict[str, Any], path: Path, **kwargs: Any) -> importer.Report:
    return importer.check(path, schema=schema, now=NOW, **kwargs)


@pytest.mark.parametrize(
    ("test", "kept"),
    [
        ({"in": ["Paid"]}, ["Paid"]),
        ({"in": ["paid"], "ignore_case": True}, ["Paid", "PAID"]),
        ({"not_in": ["Failed", "Refunded"]}, ["Paid", "PAID", "", "Pending"]),
        ({"matches": "P.*"}, ["Paid", "PAID", "Pending"]),
        ({"matches": "aid"}, []),  # the whole cell must match, not a part of it
        ({"empty": True}, [""]),
        ({"empty": False}, ["Paid", "PAID", "Failed", "Refunded", "Pending"]),
    ],
)
def test_each_kind_of_filter(
    schema: dict[str, Any], write_csv, test: dict[str, Any], kept: list[str]
) -> None:  # type: ignore[no-untyped-def]
    """A row that fails the filter is filtered, never rejected, even when it breaks rules."""
    statuses = ["Paid", "PAID", "Failed", "Refunded", "", "Pending"]
    # Every non-kept row is also broken (amount 'n/a'): a filter must stop it before validation.
    lines = [STATUS_HEADER] + [
        row(f"u{i}", "5.00" if s in kept else "n/a", status=s) for i, s in enumerate(statuses)
    ]
    schema["filter"] = [{"column": "status", **test}]
    report = filtered_check(schema, write_csv(lines))
    assert (report.valid, report.filtered, report.rejected) == (len(kept), 6 - len(kept), 0)
    assert report.balanced()
    assert report.accounting == (
        f"rows read 6 = valid {len(kept)} + filtered {6 - len(kept)} + rejected 0"
    )
    assert sum(report.filter_counts.values()) == 6 - len(kept)


def test_filters_and_together_counted_under_the_first_that_fails(
    schema: dict[str, Any], write_csv
) -> None:  # type: ignore[no-untyped-def]
    """Every filter must hold; a row failing two is counted once, under the first."""
    lines = [
        STATUS_HEADER,
        row("a", status="Paid"),
        row("b", status="Failed"),
        row("", status="Failed"),
        row("", status="Paid"),
    ]
    schema["filter"] = [
        {"column": "status", "in": ["Paid"]},
        {"column": "user", "empty": False},
    ]
    report = filtered_check(schema, write_csv(lines))
    assert (report.valid, report.filtered, report.rejected) == (1, 3, 0)
    assert dict(report.filter_counts) == {'status in ["Paid"]': 2, "user not empty": 1}
    assert report.to_dict()["filtered_by"] == dict(report.filter_counts)
    assert 'status in ["Paid"]' in report.render()


def test_filters_with_since_and_until(schema: dict[str, Any], write_csv) -> None:  # type: ignore[no-untyped-def]
    """The window applies to the mapped time after the filters; bounds are UTC dates."""
    day = 1_700_000_000 - 1_700_000_000 % 86_400  # 2023-11-14T00:00:00Z
    times = [day - 1, day, day + 86_399, day + 86_400, day + 5]
    lines = [STATUS_HEADER] + [row(f"u{i}", ts=str(t)) for i, t in enumerate(times)]
    lines.append(row("failed", ts=str(day + 10), status="Failed"))
    lines.append(row("bad", ts="not a time"))
    schema["filter"] = [{"column": "status", "in": ["Paid"]}]
    schema["time"] = {"column": "ts"}
    report = filtered_check(schema, write_csv(lines), since="2023-11-14", until="2023-11-14")
    assert report.valid == 3  # day, day + 86,399 and day + 5: the whole of 2023-11-14
    assert dict(report.filter_counts) == {'status in ["Paid"]': 1, "--since/--until": 2}
    assert report.rule_counts == {"time-format": 1}  # an unreadable time cannot be placed
    exact = filtered_check(
        schema, write_csv(lines), since="2023-11-14T00:00:05+00:00", until="2023-11-14T23:59:59Z"
    )
    assert exact.valid == 1  # day + 5 only: a datetime bound is exact and until is exclusive
    with pytest.raises(importer.ImporterError, match="since must be before"):
        filtered_check(schema, write_csv(lines), since="2024-01-02", until="2024-01-01")
    with pytest.raises(importer.ImporterError, match="not an ISO date"):
        filtered_check(schema, write_csv(lines), since="yesterday")


def test_extract_takes_the_group_and_rejects_a_cell_without_it(
    schema: dict[str, Any], write_csv
) -> None:  # type: ignore[no-untyped-def]
    """extract: the group of the first match anywhere (across lines); a miss is its own rule."""
    cookie = "%7B%2287654321%22%3A%221111111%22%7D"
    long_note = "gift_wrap: no; " * 10
    lines = [
        "user,event,notes,goals,amount,ts",
        f'u1,purchase,"gift_wrap: no\noptimizelyBuckets: {cookie}\nsource: web",1,5.00,1462472175',
        f"u2,purchase,optimizelyBuckets: {cookie},1,5.00,1462472175",
        f"u3,purchase,{long_note},1,5.00,1462472175",
        "u4,purchase,,1,5.00,1462472175",
    ]
    schema.pop("experiments")
    schema["buckets"] = {"column": "notes", "extract": r"optimizelyBuckets: (\S+)"}
    report = filtered_check(schema, write_csv(lines))
    assert (report.valid, report.rejected) == (2, 2)
    # u3's cell has no cookie (so no experiment either); u4's cell is empty.
    assert report.rule_counts == {"extract-no-match": 1, "experiment-missing": 2}
    (example,) = report.examples["extract-no-match"]
    assert example["value"] == long_note[:60] + "…"  # the start of the cell, not all of it
    urls = importer.preview(write_csv(lines), schema=schema, now=NOW)["url"]
    assert all("&x87654321=1111111&" in url for url in urls)


def test_buckets_invalid_shows_the_start_of_the_cell_and_a_hint(
    schema: dict[str, Any], write_csv
) -> None:  # type: ignore[no-untyped-def]
    schema.pop("experiments")
    schema["buckets"] = {"column": "notes"}
    cell = "optimizelyBuckets: %7B%2287654321%22%3A%221111111%22%7D and more text after it"
    lines = ["user,event,notes,goals,amount,ts", f"u1,purchase,{cell},1,5.00,1462472175"]
    report = filtered_check(schema, write_csv(lines))
    (example,) = report.examples["buckets-invalid"]
    assert example["value"] == cell[:60] + "…"
    assert "buckets.extract" in report.render()


def test_extract_with_a_pattern_re2_cannot_run_is_a_schema_error(
    schema: dict[str, Any], write_csv
) -> None:  # type: ignore[no-untyped-def]
    schema["value"] = {"column": "amount", "scale": 100, "extract": r"(\d+)(?=\.)"}
    with pytest.raises(SchemaError, match=r"value\.extract.*RE2"):
        filtered_check(schema, write_csv([HEADER]))


def test_extract_needs_exactly_one_group(schema: dict[str, Any]) -> None:
    schema["value"] = {"column": "amount", "scale": 100, "extract": r"\d+"}
    with pytest.raises(SchemaError, match="exactly one group"):
        load_schema(schema)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("normalize", "hashed_ids"),
    [
        ("auto", {sha("ana@example.com"), sha("CUST-7")}),
        ("email", {sha("ana@example.com"), sha("cust-7")}),
        ("trim", {sha("Ana@Example.com"), sha("ana@example.com"), sha("CUST-7")}),
    ],
)
def test_user_ids_are_normalised_before_hashing(
    schema: dict[str, Any], write_csv, normalize: str, hashed_ids: set[str]
) -> None:  # type: ignore[no-untyped-def]
    """auto (default): emails lower-cased, other ids kept; email: all; trim: as written."""
    lines = [HEADER] + [
        f'"{user}",purchase,87654321,1111111,1234567,5.00,1462472175'
        for user in ("Ana@Example.com", " ana@example.com ", "CUST-7")
    ]
    schema["user_id"] = {"column": "user", "hash": "sha256", "normalize": normalize}
    frame = importer.preview(write_csv(lines), schema=schema, now=NOW)
    assert set(frame["u"]) == hashed_ids


def test_totals_are_per_event_and_currency(schema: dict[str, Any], write_csv) -> None:  # type: ignore[no-untyped-def]
    """JPY, USD and KWD minor units are never added together."""
    lines = ["user,event,exp,var,goals,amount,ts,currency"] + [
        f"u{i},purchase,87654321,1111111,1,{amount},1462472175,{currency}"
        for i, (amount, currency) in enumerate(
            [("1200", "jpy"), ("12.50", "USD"), ("1.250", "KWD"), ("2.50", "usd")]
        )
    ]
    schema["value"] = {"column": "amount", "currency_column": "currency"}
    report = filtered_check(schema, write_csv(lines))
    per_event = report.to_dict()["events"]["per_event"]["purchase"]
    assert per_event["events"] == 4
    assert per_event["value_by_currency"] == {
        "JPY": {"events": 1, "value": 1200},
        "KWD": {"events": 1, "value": 1250},
        "USD": {"events": 2, "value": 1500},
    }
    text = report.render()
    assert "per event name and currency" in text
    assert "purchase  USD           2 events   v = 1,500" in text


def test_scale_with_a_currency_column_warns(schema: dict[str, Any], write_csv) -> None:  # type: ignore[no-untyped-def]
    lines = ["user,event,exp,var,goals,amount,ts,cur"] + [
        f"u{i},purchase,87654321,1111111,1,5.00,1462472175,{c}"
        for i, c in enumerate(["usd", "JPY", "kwd"])
    ]
    report = filtered_check(schema, write_csv(lines))  # the base schema has scale = 100
    (warning,) = report.warnings
    assert "'cur' looks like ISO 4217" in warning and "currency_column = 'cur'" in warning
    assert "warning: column 'cur'" in report.render()
    plain = filtered_check(schema, write_csv([HEADER, row().rsplit(",", 1)[0]]))
    assert plain.warnings == []


def test_a_schema_with_todos_lists_every_one(tmp_path: Path, schema: dict[str, Any]) -> None:
    schema["project_id"] = {"value": "TODO: your project id (digits)"}
    schema["time"] = {"column": "ts", "timezone": "TODO: IANA zone"}
    path = tmp_path / "s.toml"
    path.write_text(schema_toml_text(schema))
    with pytest.raises(SchemaError) as caught:
        load_schema(path)
    assert str(caught.value) == (
        f"{path}: 2 values are still TODO: project_id.value, time.timezone. Fill each in "
        "(its comment says what it needs), then check again."
    )


def test_schema_command_prints_what_a_pip_user_has() -> None:
    """The JSON Schema and example schemas ship in the package."""
    result = runner.invoke(app, ["schema", "--json-schema"])
    assert result.exit_code == 0
    assert result.stdout == json_schema_text()
    assert json.loads(result.stdout)["properties"]["filter"]
    listed = runner.invoke(app, ["schema", "--list"])
    assert "payments" in listed.stdout and "shop_orders" in listed.stdout
    example = runner.invoke(app, ["schema", "--example", "payments"])
    assert load_schema(tomllib.loads(example.stdout)).filter
    missing = runner.invoke(app, ["schema", "--example", "nope"])
    assert missing.exit_code == 2 and "there are:" in missing.stderr


def test_a_date_with_an_offset_is_that_day_in_that_zone() -> None:
    from importer.times import window_bound

    # 2025-06-10 in UTC+2 starts at 2025-06-09T22:00Z (not at 02:00, read as a time of day).
    assert window_bound("2025-06-10+02:00", end=False) == 1_749_506_400
    assert window_bound("2025-06-10+02:00", end=True) == 1_749_506_400 + 86_400
    assert window_bound("2025-06-10Z", end=False) == window_bound("2025-06-10", end=False)


def test_re2_patterns_python_cannot_read_are_accepted(schema: dict[str, Any], write_csv) -> None:  # type: ignore[no-untyped-def]
    """The engine is RE2: \\pN and [[:digit:]] work; a pattern RE2 refuses names the key."""
    schema["filter"] = [{"column": "status", "matches": "[[:alpha:]]+"}]
    schema["value"] = {"column": "amount", "scale": 100, "extract": r"(\pN+\.\pN+)"}
    lines = [STATUS_HEADER, row("a", status="Paid"), row("b", status="P4id")]
    report = filtered_check(schema, write_csv(lines))
    assert (report.valid, report.filtered) == (1, 1)


def test_an_empty_in_list_is_refused(schema: dict[str, Any]) -> None:
    schema["filter"] = [{"column": "status", "in": []}]
    with pytest.raises(SchemaError, match="at least one value"):
        load_schema(schema)
