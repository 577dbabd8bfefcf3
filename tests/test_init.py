"""guess_schema: the schema a user gets from `event-backfill init FILE`."""

from __future__ import annotations

import copy
import csv
import re
import tomllib
import unicodedata
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import importer
from importer.errors import SourceError
from importer.init import Guess, guess_schema
from importer.schema import CsvOptions, load_schema

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


def fill_todos(data: dict[str, Any], todos: list[str], **answers: Any) -> dict[str, Any]:
    """A copy of the data with the value at each TODO key replaced as a person would (by the
    key's last part: ``answers`` first, else ``_FILLED``)."""
    filled = _FILLED | answers
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
        node[leaf] = filled[leaf]
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


# --- exports whose column names do not help ------------------------------------------------


def euro(amount: float) -> str:
    """1234.5 -> '1.234,50' (German and most of Europe)."""
    return f"{amount:,.2f}".replace(",", "X").replace(".", ",").replace("X", ".")


def prose(guess: Guess) -> str:
    """The comments of a guess as one text, lines joined (a phrase may wrap)."""
    return " ".join(line.removeprefix("# ") for line in guess.text.splitlines())


def folded(text: str) -> str:
    """The text without case or accents, to compute expected counts independently."""
    bare = unicodedata.normalize("NFKD", text)
    return "".join(c for c in bare if not unicodedata.combining(c)).casefold()


WOO_HEADER = [
    "Bestellnummer",
    "Bestellstatus",
    "Bestelldatum",
    "Vorname",
    "E-Mail (Rechnung)",
    "Bestellsumme",
    "Währung",
    "Kundennotiz",
]
WOO_STATUSES = [
    "Abgeschlossen",
    "In Bearbeitung",
    "abgeschlossen",
    "Storniert",
    "Rückerstattet",
    "Fehlgeschlagen",
    "ABGESCHLOSSEN",
]


def woo_cookie(i: int) -> str:
    """The Kundennotiz cell: an optimizelyBuckets cookie in other text, or none."""
    cookie = f"optimizelyBuckets=%7B%22555%22%3A%22{7001 + i % 2}%22%7D"
    return ["Geschenk: nein | " + cookie + " | src=nl", cookie, "Lieferung bitte klingeln"][i % 3]


def woo_rows(count: int, symbol: str = " €") -> list[list[str]]:
    """A German WooCommerce orders export: nothing is named in English."""
    return [
        [
            str(5000 + i),
            WOO_STATUSES[i % len(WOO_STATUSES)],
            f"{1 + i % 28:02d}.02.2025 {8 + i % 12:02d}:{i % 60:02d}",
            ["Jürgen", "Zoë", "François", "Ana"][i % 4],
            f"kunde{i}@beispiel.de",
            euro(0.5 + i * 41.37) + symbol,
            "EUR",
            woo_cookie(i),
        ]
        for i in range(count)
    ]


def write_delimited(path: Path, header: list[str], rows: list[list[str]], **kw: Any) -> Path:
    """A CSV file with another delimiter or encoding (keyword arguments of open/csv.writer)."""
    encoding = kw.pop("encoding", "utf-8")
    with path.open("w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle, lineterminator="\n", **kw)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_german_woocommerce_by_content(tmp_path: Path) -> None:
    """No English column names: the order number, total and status are found by content."""
    rows = woo_rows(70)
    path = write_delimited(tmp_path / "bestellungen.csv", WOO_HEADER, rows, delimiter=";")
    guess = guess_schema(path)
    data = assert_well_formed(guess)

    assert data["dedupe_key"] == ["Bestellnummer"]
    assert data["value"] == {
        "column": "Bestellsumme",
        "thousands_separator": ".",
        "decimal_separator": ",",
        "strip": "€ ",
        "currency_column": "Währung",
    }
    status, cookie = data["filter"]
    assert status["column"] == "Bestellstatus"
    assert sorted(status["in"]) == ["ABGESCHLOSSEN", "Abgeschlossen", "abgeschlossen"]
    assert cookie["column"] == "Kundennotiz"
    assert guess.todos == ["project_id.value", "account_id.value", "time.timezone"]
    assert "looks like a status by its content" in prose(guess)

    schema = data
    report = importer.check(path, schema=schema, now=NOW)
    sent = sum(1 for row in rows if folded(row[1]) == "abgeschlossen" and "optimizely" in row[7])
    assert 0 < sent < len(rows)
    assert (report.rows_read, report.valid, report.rejected) == (len(rows), sent, 0)
    assert report.filtered == len(rows) - sent


@pytest.mark.parametrize(
    ("values", "kept"),
    [
        (["Payée", "Annulée", "En attente"], ["Payée"]),
        (["PAGADO", "cancelado", "pendiente"], ["PAGADO"]),
        (["Concluído", "Pendente"], ["Concluído"]),
        (["betaald", "mislukt"], ["betaald"]),
        (["completato", "rimborsato"], ["completato"]),
        (["Bezahlt", "Offen"], ["Bezahlt"]),
        (["settled", "voided", "captured"], ["captured", "settled"]),
        (["offen", "geschlossen"], None),  # no success word: the filter is a TODO
        (["Storniert"], None),  # one value, but a status word: every row is cancelled
    ],
)
def test_status_by_content_in_many_languages(
    tmp_path: Path, values: list[str], kept: list[str] | None
) -> None:
    rows = [
        [
            f"ORD-{i}",
            f"u{i}@x.com",
            values[i % len(values)],
            f"2025-03-{1 + i:02d}T10:00:00Z",
            "11",
            "22",
        ]
        for i in range(12)
    ]
    header = ["Auftrag", "Mail", "Etat", "Zeit", "experiment_id", "variation_id"]
    path = write_rows(tmp_path / "s.csv", header, rows)
    guess = guess_schema(path)
    data = assert_well_formed(guess)

    rule = parse(guess)["filter"][0]
    assert rule["column"] == "Etat"
    if kept is None:
        assert rule["in"][0].startswith("TODO: which of")
        assert "filter[0].in" in guess.todos
        assert "If it is not a status at all, delete this [[filter]]" in prose(guess)
    else:
        assert rule["in"] == kept
    schema = data
    report = importer.check(path, schema=schema, now=NOW)
    sent = sum(1 for row in rows if row[2] in (kept or _FILLED["in"]))
    assert (report.valid, report.filtered, report.rejected) == (sent, len(rows) - sent, 0)


def test_no_status_column_is_said(tmp_path: Path) -> None:
    """Without a status-like column, the schema and the notes say every row is sent."""
    rows = [
        [
            f"ORD-{i}",
            f"u{i}@x.com",
            f"2025-03-{1 + i:02d}T10:00:00Z",
            "11",
            str(22 + i % 2),
            "online",  # one value everywhere, not a status word: tells no rows apart
        ]
        for i in range(10)
    ]
    header = ["order_id", "email", "ts", "experiment_id", "variation_id", "Kanal"]
    path = write_rows(tmp_path / "n.csv", header, rows)
    guess = guess_schema(path)
    data = assert_well_formed(guess)

    assert "filter" not in data
    assert "# No status column found" in guess.text
    assert (
        "no status column found: every row will be sent; if some rows are not conversions "
        "add a [[filter]]" in guess.notes
    )
    report = importer.check(path, schema=data, now=NOW)
    assert (report.valid, report.filtered, report.rejected) == (10, 0, 0)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (
            lambda x: euro(x) + " €",
            {"thousands_separator": ".", "decimal_separator": ",", "strip": "€ "},
        ),
        (lambda x: f"${x:,.2f}", {"thousands_separator": ",", "strip": "$"}),
        (lambda x: f"{x:.2f}", {}),
    ],
)
def test_amount_by_content_prefers_the_total(
    tmp_path: Path, written: Any, expected: dict[str, Any]
) -> None:
    """No column is named amount/total: the money column largest on most rows is the value."""
    rows = []
    for i in range(20):
        subtotal = 10 + i * 97.31
        shipping = 4.9 if i % 2 else 0.0
        rows.append(
            [
                f"R{100 + i:06d}",
                f"k{i}@beispiel.de",
                f"2025-03-{1 + i:02d}T10:00:00Z",
                written(subtotal),
                written(shipping),
                written(subtotal + shipping),
                "11",
                "22",
            ]
        )
    header = ["Beleg", "Mail", "Zeit", "Zwischensumme", "Versand", "Gesamt", "exp", "var"]
    path = write_rows(tmp_path / "a.csv", header, rows)
    guess = guess_schema(path)
    data = assert_well_formed(guess)

    assert data["value"] == {"column": "Gesamt", **expected, "scale": 100}
    assert "chosen by its content" in prose(guess)
    assert data["dedupe_key"] == ["Beleg"]
    report = importer.check(path, schema=data, now=NOW)
    assert (report.valid, report.filtered, report.rejected) == (20, 0, 0)
    assert report.stats.value_per_event["purchase"] == sum(
        round((10 + i * 97.31 + (4.9 if i % 2 else 0)) * 100) for i in range(20)
    )


@pytest.mark.parametrize(
    ("cell", "dedupe"),
    [
        (lambda i: f"{0x9AB12345CD678901E + i * 7919:X}", True),  # hex transaction ids
        (lambda i: f"R{123 + i:06d}", True),
        (lambda i: str(5000 + i), True),  # order numbers counting up
        (lambda i: str(9000 - 3 * i), True),  # ... or down
        (lambda i: str(uuid.UUID(int=10**30 + i * 104729)), True),
        (lambda i: str(1 + i), False),  # row numbers: another export numbers other rows so
        (lambda i: str((i * 7919) % 10007 + 100), False),  # unique but in no order
        (lambda i: str(1_740_000_000 + i * 60), False),  # epoch times
        (lambda i: f"{12 + i},50 €", False),  # amounts
        (lambda i: f"Kunde Nummer {i}", False),  # free text
    ],
)
def test_unique_id_by_content(tmp_path: Path, cell: Any, dedupe: bool) -> None:
    """A unique column whose name says nothing ('Beleg') is the dedupe_key by its values."""
    rows = [
        [cell(i), f"u{i}@x.com", f"2025-03-{1 + i:02d}T10:00:00Z", "paid", "11", "22"]
        for i in range(15)
    ]
    header = ["Beleg", "Mail", "Zeit", "Zustand", "experiment_id", "variation_id"]
    path = write_rows(tmp_path / "i.csv", header, rows)
    guess = guess_schema(path)
    data = assert_well_formed(guess)

    if dedupe:
        assert data["dedupe_key"] == ["Beleg"]
    else:
        assert "dedupe_key" not in data
    report = importer.check(path, schema=data, now=NOW)
    assert (report.valid, report.filtered, report.rejected) == (15, 0, 0)


PAYPAL_HEADER = [
    "Date",
    "Time",
    "TimeZone",
    "Name",
    "Type",
    "Status",
    "Currency",
    "Gross",
    "Fee",
    "From Email Address",
    "Transaction ID",
    "Custom Number",
]


def paypal_rows(count: int) -> list[list[str]]:
    """A PayPal-style activity export: Date and Time apart, ids of experiments in a text."""
    base = datetime(2025, 1, 1, 8, 0)
    rows = []
    for i in range(count):
        when = base + timedelta(days=i % 150, minutes=37 * i)
        custom = f"exp={1001 + i % 2};var={20 + i % 3}" if i % 4 else ["", "gift"][i % 8 // 4]
        rows.append(
            [
                when.strftime("%d/%m/%Y"),
                when.strftime("%H:%M:%S"),
                "CET",
                ["Jürgen Müller", "Ana López", "Bob"][i % 3],
                ["Website Payment", "Express Checkout Payment"][i % 2],
                ["Completed", "Completed", "Completed", "Pending", "Denied"][i % 5],
                ["EUR", "USD"][i % 2],
                euro(1 + i * 53.17),
                "0,00",
                f"Buyer{i % 7}@Example.com",
                f"{0x9AB12345CD678901E + i * 104729:X}",
                custom,
            ]
        )
    return rows


def test_paypal_date_and_time_apart(tmp_path: Path) -> None:
    """Dates in one column and times of day in another: a TODO, never silent midnights."""
    rows = paypal_rows(60)
    path = write_rows(tmp_path / "paypal.csv", PAYPAL_HEADER, rows)
    guess = guess_schema(path)
    data = assert_well_formed(guess)

    time = parse(guess)["time"]
    assert time["column"] == "Date"
    assert time["format"].startswith("TODO: combine 'Date' and 'Time' into one column")
    assert time["format"].endswith("or accept day precision: %d/%m/%Y")
    assert time["timezone"] == (
        "TODO: IANA zone of these times ('TimeZone' says CET), e.g. America/New_York"
    )
    assert guess.todos == ["project_id.value", "account_id.value", "time.format", "time.timezone"]
    text = prose(guess)
    assert "WARNING: 'Date' holds dates only" in text
    assert "cannot combine two" in text
    assert 'format = "%d/%m/%Y %H:%M:%S"' in text
    assert "'TimeZone' holds a time zone on each row" in text
    assert any("'Time' the times of day" in note for note in guess.notes)
    assert data["dedupe_key"] == ["Transaction ID"]

    # Accepting day precision (and the zone), the rows check.
    schema = fill_todos(parse(guess), guess.todos, format="%d/%m/%Y", timezone="Europe/Berlin")
    report = importer.check(path, schema=schema, now=NOW)
    sent = sum(1 for row in rows if row[5] == "Completed" and "exp=" in row[11])
    assert (report.valid, report.filtered, report.rejected) == (sent, len(rows) - sent, 0)


def test_dates_without_a_time_column_are_days(tmp_path: Path) -> None:
    """Dates only and no column of times of day: the date format, said to be midnights."""
    rows = [[r[0], *r[3:]] for r in paypal_rows(20)]
    header = [PAYPAL_HEADER[0], *PAYPAL_HEADER[3:]]
    guess = guess_schema(write_rows(tmp_path / "days.csv", header, rows))
    data = assert_well_formed(guess)

    assert data["time"] == {
        "column": "Date",
        "format": "%d/%m/%Y",
        "timezone": data["time"]["timezone"],
    }
    assert guess.todos == ["project_id.value", "account_id.value", "time.timezone"]
    assert "every event is sent at midnight of its day" in prose(guess)
    assert "WARNING" not in guess.text


@pytest.mark.parametrize(
    ("template", "experiment", "variation", "matches"),
    [
        ("exp={e};var={v}", r"exp=(\d+)", r"var=(\d+)", r"(?s).*exp=\d+.*"),
        ("ref=x&experiment={e}&variation={v}", r"experiment=(\d+)", r"variation=(\d+)", None),
        ("gift\nEXP: {e} / VAR: {v}", r"EXP\s*:\s*(\d+)", r"VAR\s*:\s*(\d+)", None),
    ],
)
def test_experiment_ids_inside_text(
    tmp_path: Path, template: str, experiment: str, variation: str, matches: str | None
) -> None:
    """'exp=1002;var=21' in a note: one column read twice with extract patterns, and a filter
    leaving out the rows without it."""
    rows = [
        [
            f"ORD-{i}",
            f"u{i}@x.com",
            f"2025-03-{1 + i:02d}T10:00:00Z",
            template.format(e=1001 + i % 2, v=20 + i % 3) if i % 3 else ["", "gift wrap"][i % 2],
        ]
        for i in range(24)
    ]
    path = write_rows(tmp_path / "x.csv", ["order_id", "email", "ts", "Note"], rows)
    guess = guess_schema(path)
    data = assert_well_formed(guess)

    assert data["experiments"] == [
        {
            "experiment_column": "Note",
            "variation_column": "Note",
            "experiment_extract": experiment,
            "variation_extract": variation,
        }
    ]
    key = experiment.removesuffix(r"(\d+)")
    assert data["filter"] == [{"column": "Note", "matches": matches or rf"(?s).*{key}\d+.*"}]
    assert guess.todos == ["project_id.value", "account_id.value"]
    report = importer.check(path, schema=data, now=NOW)
    sent = sum(1 for i in range(24) if i % 3)
    assert (report.valid, report.filtered, report.rejected) == (sent, 24 - sent, 0)


@pytest.mark.parametrize(
    ("name", "zone", "timezone"),
    [
        ("created_at", None, "TODO: IANA zone of these times, e.g. America/New_York"),
        ("created_utc", None, "UTC"),
        ("created_at", "America/New_York", None),  # Arrow timestamps with a zone: instants
    ],
)
@pytest.mark.parametrize("as_file", [False, True])
def test_arrow_timestamps_without_a_zone(
    tmp_path: Path, name: str, zone: str | None, timezone: str | None, as_file: bool
) -> None:
    """Naive Parquet/DataFrame timestamps need a timezone, or every row is time-no-zone."""
    times = pd.to_datetime([f"2025-03-{1 + i:02d} 10:30:00" for i in range(8)])
    frame = pd.DataFrame(
        {
            "order_id": [f"A-{i}" for i in range(8)],
            "email": [f"u{i}@x.com" for i in range(8)],
            name: times.tz_localize(zone) if zone else times,
            "experiment_id": ["11"] * 8,
            "variation_id": ["22"] * 8,
        }
    )
    source: Any = frame
    if as_file:
        source = tmp_path / "orders.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), source)
    guess = guess_schema(source)
    data = assert_well_formed(guess)

    assert data["time"]["column"] == name
    assert parse(guess)["time"].get("timezone") == timezone
    assert ("time.timezone" in guess.todos) == (timezone is not None and "TODO" in timezone)
    report = importer.check(source, schema=data, now=NOW)
    assert (report.valid, report.filtered, report.rejected) == (8, 0, 0)


@pytest.mark.parametrize(
    ("options", "table"),
    [
        (CsvOptions(encoding="latin-1"), {"encoding": "latin-1"}),
        (CsvOptions(encoding="latin-1", delimiter=";"), {"encoding": "latin-1", "delimiter": ";"}),
    ],
)
def test_csv_options_encoding(tmp_path: Path, options: CsvOptions, table: dict[str, str]) -> None:
    """A Latin-1 file is read with csv_options, and the schema says so in [csv] for check."""
    rows = woo_rows(30, symbol="")  # Latin-1 has no euro sign
    path = write_delimited(
        tmp_path / "latin1.csv", WOO_HEADER, rows, delimiter=";", encoding="latin-1"
    )
    with pytest.raises(SourceError, match="not valid utf-8"):
        guess_schema(path)
    guess = guess_schema(path, csv_options=options)
    data = assert_well_formed(guess)

    assert data["csv"] == table
    assert data["value"]["currency_column"] == "Währung"
    assert "Rückerstattet" in guess.text
    assert ("as given" in guess.notes[0]) == ("delimiter" in table)
    report = importer.check(path, schema=data, now=NOW)
    sent = sum(1 for row in rows if folded(row[1]) == "abgeschlossen" and "optimizely" in row[7])
    assert (report.valid, report.filtered, report.rejected) == (sent, len(rows) - sent, 0)
