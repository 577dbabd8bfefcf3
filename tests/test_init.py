"""guess_schema: the schema a user gets from `event-backfill init FILE`."""

from __future__ import annotations

import copy
import csv
import re
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import importer
from importer.init import Guess, guess_schema
from importer.schema import load_schema

from .conftest import NOW

# What a person would write in place of each TODO, by the key's last part.
_FILLED = {
    "value": "1234567",
    "experiment": "987654321",
    "variation": "1111111",
    "timezone": "America/New_York",
    "column": "whatever",
    "in": ["paid"],
    "format": "%d/%m/%Y %H:%M",
}


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """A CSV file with proper quoting (cells may hold commas and newlines)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def stripe_payments(path: Path, count: int = 40) -> Path:
    """A Stripe-like payments export: 1,234.56 amounts, lower-case currencies, statuses."""
    header = [
        "id",
        "Created (UTC)",
        "Amount",
        "Currency",
        "Status",
        "Customer Email",
        "experiment_id (metadata)",
        "variation_id (metadata)",
    ]
    statuses = ["Paid"] * 6 + ["Failed", "Refunded"]
    rows = [
        [
            f"ch_3PqR{i:06d}xYz",
            f"2025-03-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:10",
            f"{1 + i * 37 % 3000:,}.{i % 100:02d}",
            "usd" if i % 5 else "eur",
            statuses[i % len(statuses)],
            f"Customer{i}@Example.com",
            "" if i % 10 == 9 else "20250101",  # never in an experiment
            "" if i % 10 == 9 else str(300 + i % 2),
        ]
        for i in range(count)
    ]
    return write_rows(path, header, rows)


SHOP_HEADER = [
    "Name",
    "Email",
    "Financial Status",
    "Paid at",
    "Currency",
    "Subtotal",
    "Shipping",
    "Total",
    "Created at",
    "Lineitem quantity",
    "Lineitem name",
    "Lineitem price",
    "Note Attributes",
    "Id",
]


def shop_orders(path: Path, count: int = 30) -> Path:
    """A Shopify-like orders export: line-item continuation rows, a cookie in the notes."""
    rows: list[list[str]] = []
    for i in range(count):
        status = "pending" if i % 10 == 9 else ("refunded" if i % 7 == 6 else "paid")
        paid_at = "" if status == "pending" else f"2025-03-{1 + i % 28:02d} 17:22:10 -0500"
        note = "gift_wrap: no"
        if i % 4:
            note += f"\noptimizelyBuckets: %7B%2220250101%22%3A%22{301 + i % 2}%22%7D"
        rows.append(
            [
                f"#{1001 + i}",
                f"buyer{i}@example.com",
                status,
                paid_at,
                "USD",
                "100.00",
                "5.00",
                f"{1000 + i * 11:,}.00",
                f"2025-03-{1 + i % 28:02d} 17:20:00 -0500",
                "1",
                "Widget",
                "100.00",
                note,
                str(5_678_901_234_567 + i),
            ]
        )
        if i % 3 == 0:  # a second line item: only the name and the Lineitem columns
            rows.append(
                [f"#{1001 + i}", "", "", "", "", "", "", "", "", "2", "Gadget", "10.00", "", ""]
            )
    return write_rows(path, SHOP_HEADER, rows)


def cookie_file(path: Path) -> Path:
    """Web conversions with a plain URL-encoded cookie column, empty on some rows."""
    rows = [
        [
            f"{1_734_213_312_422 + i}r4",
            "" if i % 5 == 4 else f"%7B%22987654321%22%3A%22{1111111 + i % 2}%22%7D",
            f"{1000 + i}",
            f"2025-03-01T14:{i % 60:02d}:00Z",
        ]
        for i in range(20)
    ]
    return write_rows(path, ["visitor_id", "buckets", "value_cents", "ts"], rows)


def parse(guess: Guess) -> dict[str, Any]:
    """The guessed schema as TOML data."""
    return tomllib.loads(guess.text)


def fill_todos(data: dict[str, Any], todos: list[str]) -> dict[str, Any]:
    """A copy of the data with the value at each TODO key replaced as a person would."""
    data = copy.deepcopy(data)
    for dotted in todos:
        node: Any = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            match = re.fullmatch(r"(\w+)\[(\d+)\]", part)
            node = node[match.group(1)][int(match.group(2))] if match else node[part]
        leaf = parts[-1]
        value = node[leaf]
        assert str(value[0] if isinstance(value, list) else value).startswith("TODO"), dotted
        node[leaf] = _FILLED[leaf]
    return data


def todo_values(data: Any) -> list[str]:
    """Every string starting with TODO anywhere in the data."""
    if isinstance(data, dict):
        return [t for v in data.values() for t in todo_values(v)]
    if isinstance(data, list):
        return [t for v in data for t in todo_values(v)]
    return [data] if isinstance(data, str) and data.startswith("TODO") else []


def assert_well_formed(guess: Guess) -> dict[str, Any]:
    """The text parses, each TODO is listed, it loads once filled; comments are comments."""
    data = parse(guess)
    filled = fill_todos(data, guess.todos)
    assert todo_values(filled) == []
    load_schema(filled)
    assert guess.text.startswith("# ")
    assert "event-backfill check" in guess.text or "importer.check(frame" in guess.text
    for line in guess.text.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"\[\[?[a-z_]+\]\]?|[a-z_]+ = \S.*", line), line
    assert guess.notes
    return filled


def test_stripe_payments(tmp_path: Path) -> None:
    guess = guess_schema(stripe_payments(tmp_path / "payments.csv"))
    data = assert_well_formed(guess)

    assert guess.todos == ["project_id.value", "account_id.value"]
    assert data["dedupe_key"] == ["id"]
    assert data["user_id"] == {"column": "Customer Email", "hash": "sha256", "normalize": "email"}
    assert data["event_name"] == {"value": "purchase"}
    assert data["value"] == {
        "column": "Amount",
        "thousands_separator": ",",
        "currency_column": "Currency",
    }
    assert data["time"] == {
        "column": "Created (UTC)",
        "format": "%Y-%m-%d %H:%M:%S",
        "timezone": "UTC",
    }
    assert data["experiments"] == [
        {
            "experiment_column": "experiment_id (metadata)",
            "variation_column": "variation_id (metadata)",
            "required": True,
        }
    ]
    assert data["filter"] == [
        {"column": "Status", "in": ["Paid"]},
        {"column": "experiment_id (metadata)", "empty": False},
    ]
    assert "buckets" not in data
    # The comments say why: the email share, every status with its count.
    assert "100% of 40 non-empty sampled cells look like email addresses" in guess.text
    assert "'Paid' 30, 'Failed' 5, 'Refunded' 5" in guess.text
    assert "a guess" in guess.text.lower()


def test_stripe_guess_checks_clean(tmp_path: Path) -> None:
    """Filled in, the guess validates every row; unpaid ones and those without experiment are
    filtered."""
    path = stripe_payments(tmp_path / "payments.csv")
    guess = guess_schema(path)
    schema = fill_todos(parse(guess), guess.todos)
    report = importer.check(path, schema=schema, now=NOW)
    sent = sum(1 for i in range(40) if i % 8 < 6 and i % 10 != 9)
    assert (report.rows_read, report.valid, report.rejected) == (40, sent, 0)
    assert report.filtered == 40 - sent


def test_shop_orders(tmp_path: Path) -> None:
    guess = guess_schema(shop_orders(tmp_path / "orders.csv"))
    data = assert_well_formed(guess)

    assert guess.todos == ["project_id.value", "account_id.value"]
    assert data["dedupe_key"] == ["Name"]
    assert data["user_id"]["column"] == "Email"
    assert data["value"] == {
        "column": "Total",
        "thousands_separator": ",",
        "currency_column": "Currency",
    }
    assert data["time"] == {"column": "Paid at", "format": "%Y-%m-%d %H:%M:%S %z"}
    assert data["buckets"] == {
        "column": "Note Attributes",
        "format": "cookie",
        "extract": r"optimizelyBuckets: (\S+)",
    }
    assert "experiments" not in data
    assert data["filter"] == [
        {"column": "Financial Status", "in": ["paid"]},
        {"column": "Note Attributes", "matches": "(?s).*optimizelyBuckets.*"},
    ]
    assert "Chosen over 'Created at'" in guess.text
    assert "Chosen over 'Subtotal'" in guess.text
    assert "continuation rows" in " ".join(guess.notes)


def test_shop_guess_checks_clean(tmp_path: Path) -> None:
    """Continuation rows, unpaid orders and orders without the cookie are filtered out."""
    path = shop_orders(tmp_path / "orders.csv")
    guess = guess_schema(path)
    schema = fill_todos(parse(guess), guess.todos)
    report = importer.check(path, schema=schema, now=NOW)
    # 30 orders + 10 line-item rows; sent: paid orders (not pending/refunded) with a cookie.
    paid_with_cookie = sum(1 for i in range(30) if i % 10 != 9 and i % 7 != 6 and i % 4)
    assert report.rows_read == 40
    assert (report.valid, report.rejected) == (paid_with_cookie, 0)


def test_plain_cookie_column(tmp_path: Path) -> None:
    guess = guess_schema(cookie_file(tmp_path / "web.csv"))
    data = assert_well_formed(guess)

    assert data["buckets"] == {"column": "buckets", "format": "cookie"}
    assert data["filter"] == [{"column": "buckets", "empty": False}]
    assert data["user_id"] == {"column": "visitor_id", "hash": "sha256"}
    assert data["value"] == {"column": "value_cents"}
    assert data["time"] == {"column": "ts", "format": "iso"}
    assert "dedupe_key" not in data
    assert guess.todos == ["project_id.value", "account_id.value"]


def test_json_buckets_and_ids_from_columns(tmp_path: Path) -> None:
    rows = [
        [
            "1234567",
            "8511325",
            f"u{i}",
            '{"987654321": "1111111"}',
            "signup",
            str(1_740_000_000 + i),
        ]
        for i in range(10)
    ]
    header = ["project_id", "account_id", "user", "assignments", "event", "timestamp"]
    guess = guess_schema(write_rows(tmp_path / "j.csv", header, rows))
    data = assert_well_formed(guess)

    assert data["project_id"] == {"column": "project_id"}
    assert data["account_id"] == {"column": "account_id"}
    assert data["buckets"] == {"column": "assignments", "format": "json"}
    assert "filter" not in data
    assert data["event_name"] == {"column": "event"}
    assert data["time"] == {"column": "timestamp", "format": "epoch"}
    assert guess.todos == []


def test_nothing_to_guess(tmp_path: Path) -> None:
    rows = [["alpha", "x y", "blue"], ["beta", "z", "green"], ["gamma", "", "red"]]
    guess = guess_schema(write_rows(tmp_path / "odd.csv", ["a", "b", "c"], rows))
    data = assert_well_formed(guess)

    assert guess.todos == [
        "project_id.value",
        "account_id.value",
        "user_id.column",
        "experiments[0].experiment",
        "experiments[0].variation",
        "time.column",
    ]
    assert set(data) == {
        "kind",
        "project_id",
        "account_id",
        "event_name",
        "user_id",
        "experiments",
        "time",
        "checks",
    }
    assert any("TODO" in note for note in guess.notes)


@pytest.mark.parametrize(
    ("cells", "expected", "todos"),
    [
        (["25/03/2025 14:05", "01/04/2025 09:00"], "%d/%m/%Y %H:%M", ["time.timezone"]),
        (["03/25/2025 14:05", "04/01/2025 09:00"], "%m/%d/%Y %H:%M", ["time.timezone"]),
        (["01/02/2025 14:05", "03/04/2025 09:00"], None, ["time.format", "time.timezone"]),
        (["2025-03-25T14:05:00+01:00", "2025-04-01T09:00:00Z"], "iso", []),
    ],
)
def test_time_formats(
    tmp_path: Path, cells: list[str], expected: str | None, todos: list[str]
) -> None:
    rows = [[f"ORD-{i}", f"u{i}@x.com", cell, "1", "2"] for i, cell in enumerate(cells)]
    header = ["order_id", "email", "date", "experiment", "variation"]
    guess = guess_schema(write_rows(tmp_path / "t.csv", header, rows))
    assert_well_formed(guess)
    time = parse(guess)["time"]
    assert guess.todos == ["project_id.value", "account_id.value", *todos]
    if expected is None:
        assert time["format"].startswith("TODO")
        assert "No day above 12" in guess.text
    else:
        assert time["format"] == expected


def test_status_without_success_word_is_a_todo(tmp_path: Path) -> None:
    rows = [[f"ORD-{i}", f"u{i}@x.com", ["open", "closed"][i % 2], "1", "2"] for i in range(6)]
    header = ["order_id", "email", "Status", "experiment_id", "variation_id"]
    guess = guess_schema(write_rows(tmp_path / "s.csv", header, rows))
    assert_well_formed(guess)

    assert parse(guess)["filter"][0]["in"] == ["TODO: which of closed, open are conversions?"]
    assert "filter[0].in" in guess.todos


def test_dataframe_and_odd_column_names(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            'Order "No" (POS)': ["A-1001", "A-1002", "A-1003"],
            "Price ($)": ["$1,200.00", "$15.50", "$3.00"],
            "customer id": ["c1", "c2", "c3"],
            "event type": ["buy", "buy", "buy"],
            "when\tdone": ["2025-01-01 10:00:00", "2025-01-02 10:00:00", "2025-01-03 10:00:00"],
            "experiment": ["11", "11", "11"],
            "variation": ["22", "23", "22"],
        }
    )
    guess = guess_schema(frame)
    data = assert_well_formed(guess)

    assert data["dedupe_key"] == ['Order "No" (POS)']
    assert data["value"] == {
        "column": "Price ($)",
        "thousands_separator": ",",
        "strip": "$",
        "scale": 100,
    }
    assert data["user_id"] == {"column": "customer id", "hash": "sha256"}
    assert data["event_name"] == {"column": "event type"}
    assert data["time"]["column"] == "when\tdone"
    assert "importer.check(frame" in guess.text


def test_sample_rows_and_determinism(tmp_path: Path) -> None:
    path = shop_orders(tmp_path / "orders.csv", count=60)
    first = guess_schema(path, sample_rows=10)
    assert "(10 sampled rows" in first.text
    assert guess_schema(path, sample_rows=10).text == first.text


def test_european_amounts_and_semicolons(tmp_path: Path) -> None:
    path = tmp_path / "eu.csv"
    path.write_text(
        "Order;Amount;Currency;Date;E-Mail;experiment_id;variation_id\n"
        "B-1001;1.234,56 €;EUR;25.03.2025 14:05;a@b.de;11;22\n"
        "B-1002;12,50 €;eur;01.04.2025 09:00;c@d.de;11;23\n",
        encoding="utf-8",
    )
    guess = guess_schema(path)
    data = assert_well_formed(guess)

    assert data["value"] == {
        "column": "Amount",
        "thousands_separator": ".",
        "decimal_separator": ",",
        "strip": "€ ",
        "currency_column": "Currency",
    }
    assert data["time"]["format"] == "%d.%m.%Y %H:%M"
    assert data["dedupe_key"] == ["Order"]
    assert "delimiter ';'" in guess.notes[0]
    report = importer.check(path, schema=data, now=NOW)
    assert (report.valid, report.rejected) == (2, 0)
