"""Generate the sample data of this folder, deterministically (fixed seed, no clock, no network).

Run from anywhere:

    python sample_data/generate.py

It (re)writes, next to itself:

* ``offline_sales.csv`` and ``offline_sales.parquet``: 600 POS orders of 2025, all valid
  under ``schemas/offline_sales.toml``;
* ``impressions.csv``: 100 experiment impressions (``schemas/impressions.toml``);
* ``optimizely_buckets.csv``: 100 web conversions with the optimizelyBuckets cookie
  (``schemas/optimizely_buckets.toml``);
* ``bad_rows.csv`` and ``bad_times.csv``: test files where rows break each reject rule
  (``schemas/bad_rows.toml``, ``schemas/bad_times.toml``);
* ``README.md``: what each file is, and which line of the test files breaks which rule.

Only the standard library and pyarrow (for the Parquet file) are used; the importer itself is
not imported, so the data does not depend on the code it tests.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq

SEED = 20250101
HERE = Path(__file__).resolve().parent

PROJECT_ID = "1234567"
ACCOUNT_ID = "8511325"
CHANNEL_SEGMENT = "983745985"
NEW_YORK = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")

# Experiment id -> its variation ids (the second experiment has a "2222222_3333333" variation,
# as in the Event API spec's cookie example).
EXPERIMENTS: dict[str, list[str]] = {
    "987654321": ["1111111", "1111112"],
    "876543210": ["2222222_3333333", "2222223"],
    "765432109": ["4444444", "4444445", "4444446"],
}
GOAL_PURCHASE = "12345"
GOAL_REVENUE = "4324234"

# The cookie value given in the Event API spec, byte for byte.
SPEC_COOKIE = "%7B%22987654321%22%3A%221111111%22%2C%22876543210%22%3A%222222222_3333333%22%7D"

SALES_COLUMNS = [
    "order_id",
    "store_id",
    "customer_id",
    "amount",
    "currency",
    "ordered_at",
    "experiment_id",
    "variation_id",
    "goal_ids",
    "event",
    "channel",
]
BAD_ROWS_COLUMNS = [
    "order_id",
    "store_id",
    "project_id",
    "account_id",
    "customer_id",
    "amount",
    "currency",
    "ordered_at",
    "experiment_id",
    "variation_id",
    "optimizelyBuckets",
    "goal_ids",
    "event",
    "channel",
    "expect",
    "why",
]
BAD_TIMES_COLUMNS = [*SALES_COLUMNS, "expect", "why"]

STORES = ["NYC-001", "NYC-002", "BKN-003", "QNS-004", "JCY-005", "STM-006"]
STORE_WEIGHTS = [30, 22, 18, 12, 10, 8]
CHANNELS = ["in_store", "curbside", "kiosk", "phone_order"]
CHANNEL_WEIGHTS = [70, 12, 10, 8]
FIRST_NAMES = [
    "ana",
    "bruno",
    "carla",
    "diego",
    "elena",
    "farid",
    "grace",
    "hugo",
    "ines",
    "jonas",
    "kiara",
    "liam",
    "maya",
    "nadia",
    "omar",
    "paula",
    "quentin",
    "rosa",
    "sami",
    "tessa",
]
LAST_NAMES = [
    "silva",
    "moreau",
    "okafor",
    "tanaka",
    "novak",
    "garcia",
    "kowalski",
    "nguyen",
    "haddad",
    "lindqvist",
    "rossi",
    "murphy",
    "cohen",
    "santos",
    "weber",
]


# -- CSV ----------------------------------------------------------------------------------


def csv_field(text: str) -> str:
    """A CSV field, quoted when it holds a comma, a quote or any control character."""
    if any(c in text for c in ',"') or any(ord(c) < 32 or ord(c) == 127 for c in text):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Write a UTF-8 CSV with LF line ends. Rows may have another length than the header."""
    lines = [",".join(csv_field(field) for field in row) + "\n" for row in [header, *rows]]
    path.write_text("".join(lines), encoding="utf-8", newline="")


# -- helpers ------------------------------------------------------------------------------


def unambiguous(local: datetime, zone: ZoneInfo) -> bool:
    """Whether a naive wall time happens exactly once in ``zone`` (not in a DST gap or fold)."""
    first = local.replace(tzinfo=zone, fold=0)
    second = local.replace(tzinfo=zone, fold=1)
    return first.utcoffset() == second.utcoffset()


def money(cents: int) -> str:
    """Cents as text with two decimals and ',' grouping thousands: 123456 -> '1,234.56'."""
    return f"{cents // 100:,}.{cents % 100:02d}"


def cookie(buckets: dict[str, str]) -> str:
    """The optimizelyBuckets cookie value: URL-encoded compact JSON."""
    return quote(json.dumps(buckets, separators=(",", ":")), safe="")


def random_instant(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A whole second in [start, end)."""
    span = int((end - start).total_seconds())
    return start + timedelta(seconds=rng.randrange(span))


def pick(rng: random.Random, items: Sequence[str], weights: Sequence[int]) -> str:
    return rng.choices(items, weights=weights, k=1)[0]


# -- offline_sales ------------------------------------------------------------------------


def make_customers(rng: random.Random, count: int) -> list[str]:
    """Loyalty ids; about one in ten is an email address (hence hash = "sha256")."""
    emails = sorted({f"{f}.{last}@example.com" for f in FIRST_NAMES for last in LAST_NAMES})
    chosen_emails = rng.sample(emails, k=count // 10)
    numbers = rng.sample(range(10_000, 9_999_999), k=count - len(chosen_emails))
    customers = [f"CUS-{n:07d}" for n in numbers] + chosen_emails
    rng.shuffle(customers)
    return customers


def order_time(rng: random.Random) -> datetime:
    """A local store time in 2025 during opening hours (8:00-21:59), never in a DST gap/fold."""
    while True:
        day = date(2025, 1, 1) + timedelta(days=rng.randrange(365))
        hour = rng.choices(range(8, 22), weights=[2, 4, 6, 8, 10, 10, 8, 7, 7, 8, 9, 8, 5, 3])[0]
        local = datetime(day.year, day.month, day.day, hour, rng.randrange(60), rng.randrange(60))
        if unambiguous(local, NEW_YORK):  # always true in opening hours; kept as a guard
            return local


def amount_cents(rng: random.Random) -> int:
    """Basket value: mostly $5-$300, and some big-ticket orders over $1,000."""
    if rng.random() < 0.05:
        return rng.randrange(100_000, 450_000)
    return max(199, int(rng.lognormvariate(math.log(4_500), 0.8)))


def offline_sales(rng: random.Random, count: int = 600) -> list[dict[str, str]]:
    customers = make_customers(rng, 240)
    # Repeat customers: a few come often, most once or twice.
    weights = [1.0 / (i + 1) ** 0.7 for i in range(len(customers))]
    times = sorted(order_time(rng) for _ in range(count))
    rows = []
    number = 100
    experiment_ids = list(EXPERIMENTS)
    for when in times:
        number += rng.randint(1, 4)
        channel = pick(rng, CHANNELS, CHANNEL_WEIGHTS)
        experiment = rng.choices(experiment_ids, weights=[5, 3, 2])[0]
        rows.append(
            {
                "order_id": f"POS-2025-{number:06d}",
                "store_id": pick(rng, STORES, STORE_WEIGHTS),
                "customer_id": rng.choices(customers, weights=weights)[0],
                "amount": money(amount_cents(rng)),
                "currency": "USD",
                "ordered_at": when.strftime("%Y-%m-%d %H:%M:%S"),
                "experiment_id": experiment,
                "variation_id": rng.choice(EXPERIMENTS[experiment]),
                "goal_ids": (
                    f"{GOAL_PURCHASE},{GOAL_REVENUE}" if rng.random() < 0.35 else GOAL_PURCHASE
                ),
                "event": "kiosk_purchase" if channel == "kiosk" else "offline_purchase",
                "channel": channel,
            }
        )
    return rows


def write_parquet(path: Path, columns: Sequence[str], rows: Sequence[dict[str, str]]) -> None:
    """Every column as a string column, so the Parquet file maps exactly like the CSV."""
    table = pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in columns})
    pq.write_table(table, path, compression="snappy")


# -- impressions --------------------------------------------------------------------------


def impressions(rng: random.Random, count: int = 100) -> list[dict[str, str]]:
    users = [f"usr_{rng.getrandbits(40):010x}" for _ in range(70)]
    seen: set[tuple[str, str]] = set()
    rows = []
    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    while len(rows) < count:
        user = rng.choice(users)
        experiment = rng.choice(list(EXPERIMENTS))
        if (user, experiment) in seen:  # a user is bucketed once per experiment
            continue
        seen.add((user, experiment))
        when = random_instant(rng, start, end) + timedelta(milliseconds=rng.randrange(1000))
        rows.append(
            {
                "user_id": user,
                "experiment_id": experiment,
                "variation_id": rng.choice(EXPERIMENTS[experiment]),
                "timestamp": str(int(when.timestamp() * 1000)),
            }
        )
    rows.sort(key=lambda r: int(r["timestamp"]))
    return rows


# -- optimizely_buckets -------------------------------------------------------------------


def optimizely_buckets(rng: random.Random, count: int = 100) -> list[dict[str, str]]:
    """Web conversions with the visitor's optimizelyBuckets cookie, times in Paris."""
    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    visitors = []
    for index in range(60):
        first_visit = random_instant(rng, datetime(2024, 6, 1, tzinfo=UTC), start)
        visitor = f"{int(first_visit.timestamp() * 1000) + rng.randrange(1000)}r{rng.randrange(10)}"
        if index < 15:
            buckets = {"987654321": "1111111", "876543210": "2222222_3333333"}  # spec example
        else:
            chosen = rng.sample(list(EXPERIMENTS), k=rng.randint(1, 3))
            buckets = {e: rng.choice(EXPERIMENTS[e]) for e in chosen}
        visitors.append((visitor, cookie(buckets)))
    assert visitors[0][1] == SPEC_COOKIE
    rows = []
    for index in range(count):
        visitor, value = visitors[index] if index < len(visitors) else rng.choice(visitors)
        if index == 0:
            when = datetime(2025, 3, 1, 14, 5, tzinfo=PARIS)  # the example in the README
        else:
            when = random_instant(rng, start, end).astimezone(PARIS)
        event = "purchase" if rng.random() < 0.6 else "add_to_cart"
        cents = rng.randrange(999, 25_000) if event == "purchase" else rng.randrange(499, 9_000)
        rows.append(
            {
                "visitor_id": visitor,
                "optimizelyBuckets": value,
                "event": event,
                "value_cents": str(cents),
                "time": when.isoformat(timespec="seconds"),
            }
        )
    return rows


# -- bad_rows -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One row of a test file: what differs from a valid row, and what check should say."""

    expect: str  # rule codes, space separated; "" for a valid row
    why: str
    changes: dict[str, str]
    extra: tuple[str, ...] = ()  # fields beyond the header (a malformed record)


LONG_CHANNEL = "in_store|" * 120  # 1,080 characters, 1,320 bytes once encoded

BAD_ROWS: list[Case] = [
    Case("", "valid: the reference row", {}),
    Case("", "valid: amount with a thousands separator", {"amount": "1,234.56"}),
    Case(
        "",
        "valid: two goal ids and a variation joined by '_'",
        {
            "goal_ids": "12345,4324234",
            "experiment_id": "876543210",
            "variation_id": "2222222_3333333",
        },
    ),
    Case(
        "",
        "valid: buckets cookie adds two more experiments (three x parameters)",
        {"optimizelyBuckets": SPEC_COOKIE, "experiment_id": "765432109", "variation_id": "4444445"},
    ),
    Case("", "valid: JPY has no decimals, so v = 1500", {"amount": "1500", "currency": "JPY"}),
    Case("", "valid: time in UTC with Z", {"ordered_at": "2025-08-30T16:45:00Z"}),
    Case(
        "",
        "valid: 2024-01-01T01:00:00Z is not before checks.oldest (2024-01-01 UTC)",
        {"ordered_at": "2023-12-31T20:00:00-05:00"},
    ),
    Case("project-id-digits", "project id with a letter", {"project_id": "12345a7"}),
    Case("account-id-digits", "account id with a dash", {"account_id": "8511-325"}),
    Case("user-id-empty", "customer id empty", {"customer_id": ""}),
    Case("user-id-control", "TAB inside the customer id", {"customer_id": "CUS-00\t42117"}),
    Case(
        "user-id-email",
        "email address as user id and the schema does not hash",
        {"customer_id": "ana.silva@example.com"},
    ),
    Case("event-name-empty", "event name empty", {"event": ""}),
    Case("event-name-control", "TAB inside the event name", {"event": "offline\tpurchase"}),
    Case(
        "experiment-missing",
        "no experiment at all: experiment, variation and cookie empty",
        {"experiment_id": "", "variation_id": ""},
    ),
    Case(
        "experiment-missing",
        "pair empty but a valid cookie: the pair is required all the same",
        {"experiment_id": "", "variation_id": "", "optimizelyBuckets": SPEC_COOKIE},
    ),
    Case(
        "experiment-missing",
        "experiment id given but variation empty",
        {"experiment_id": "765432109", "variation_id": ""},
    ),
    Case(
        "experiment-duplicate",
        "experiment 987654321 in the column and again in the cookie",
        {"experiment_id": "987654321", "variation_id": "1111111", "optimizelyBuckets": SPEC_COOKIE},
    ),
    Case(
        "experiment-duplicate",
        "the same with another variation: the experiment id counts",
        {"experiment_id": "987654321", "variation_id": "1111112", "optimizelyBuckets": SPEC_COOKIE},
    ),
    Case("experiment-id-digits", "experiment id is not digits", {"experiment_id": "exp-987654321"}),
    Case(
        "variation-id-format",
        "variation ids joined by '-' instead of '_'",
        {"experiment_id": "876543210", "variation_id": "2222222-3333333"},
    ),
    Case(
        "buckets-invalid",
        "cookie maps an experiment to 'control', not a variation id",
        {"optimizelyBuckets": cookie({"987654321": "control"})},
    ),
    Case(
        "buckets-invalid", "cookie is not URL-encoded JSON", {"optimizelyBuckets": "not-a-cookie"}
    ),
    Case("goal-ids-missing", "goal ids empty and goal_ids.required = true", {"goal_ids": ""}),
    Case("goal-ids-format", "goal ids separated by ';'", {"goal_ids": "12345;4324234"}),
    Case("value-missing", "amount empty", {"amount": ""}),
    Case(
        "value-format",
        "currency symbol in the amount (the schema has no value.strip)",
        {"amount": "$19.99"},
    ),
    Case("value-format", "thousands separator in the wrong place", {"amount": "1,23.45"}),
    Case("value-not-finite", "amount NaN", {"amount": "NaN"}),
    Case("value-not-finite", "amount Infinity", {"amount": "Infinity"}),
    Case("value-rounding", "three decimals in USD: 1234.5 cents", {"amount": "12.345"}),
    Case(
        "value-overflow",
        "amount beyond a 64-bit integer once in cents",
        {"amount": "99999999999999999999.99"},
    ),
    Case("value-negative", "a refund, and value.allow_negative is false", {"amount": "-15.00"}),
    Case("currency-unknown", "currency not an ISO 4217 code", {"currency": "XYZ"}),
    Case("currency-unknown", "currency empty", {"currency": ""}),
    Case("time-missing", "time empty", {"ordered_at": ""}),
    Case("time-format", "day/month/year is not ISO 8601", {"ordered_at": "14/05/2025 10:22"}),
    Case(
        "time-no-zone",
        "ISO time without offset, and the schema has no time.timezone",
        {"ordered_at": "2025-05-14T10:22:00"},
    ),
    Case(
        "time-too-old",
        "before checks.oldest = 2024-01-01",
        {"ordered_at": "2023-12-31T23:00:00+00:00"},
    ),
    Case("time-future", "in 2099", {"ordered_at": "2099-01-01T00:00:00+00:00"}),
    Case("segment-missing", "channel empty and the segment is required", {"channel": ""}),
    Case(
        "segment-missing",
        "channel and store both empty: only the required segment is a reject",
        {"channel": "", "store_id": ""},
    ),
    Case("segment-control", "TAB inside the channel", {"channel": "in\tstore"}),
    Case("dedupe-key-empty", "order id empty", {"order_id": ""}),
    Case(
        "url-too-long",
        "1,080-character channel: the URL exceeds checks.max_url_bytes = 1000",
        {"channel": LONG_CHANNEL},
    ),
    Case("csv-malformed", "one field more than the header", {}, extra=("surplus",)),
    Case(
        "value-missing time-missing",
        "one row can break several rules: amount and time empty",
        {"amount": "", "ordered_at": ""},
    ),
    Case(
        "experiment-missing segment-missing",
        "no experiment and no segment at all: pair, cookie, channel and store empty",
        {"experiment_id": "", "variation_id": "", "channel": "", "store_id": ""},
    ),
    Case("", "valid: a valid row after the bad ones", {"channel": "curbside"}),
    Case(
        "",
        "valid: store empty: the second segment is optional, so the URL has no s983745986",
        {"store_id": ""},
    ),
    Case(
        "",
        "valid: order in the variation '2222223'",
        {
            "experiment_id": "876543210",
            "variation_id": "2222223",
            "channel": "kiosk",
            "event": "kiosk_purchase",
        },
    ),
]


def bad_rows(rng: random.Random) -> list[list[str]]:
    rows = []
    for index, case in enumerate(BAD_ROWS, start=1):
        when = order_time(rng).replace(tzinfo=NEW_YORK)
        experiment = rng.choice(["987654321", "765432109"])
        row = {
            "order_id": f"POS-2025-9{index:05d}",
            "store_id": rng.choice(STORES),
            "project_id": PROJECT_ID,
            "account_id": ACCOUNT_ID,
            "customer_id": f"CUS-{rng.randrange(10_000, 9_999_999):07d}",
            "amount": money(rng.randrange(500, 20_000)),
            "currency": "USD",
            "ordered_at": when.isoformat(timespec="seconds"),
            "experiment_id": experiment,
            "variation_id": rng.choice(EXPERIMENTS[experiment]),
            "optimizelyBuckets": "",
            "goal_ids": GOAL_PURCHASE,
            "event": "offline_purchase",
            "channel": "in_store",
        }
        row.update(case.changes)
        row["expect"] = case.expect
        row["why"] = case.why
        rows.append([row[c] for c in BAD_ROWS_COLUMNS] + list(case.extra))
    return rows


BAD_TIMES: list[tuple[str, str, str]] = [  # (local time in New York, expect, why)
    ("2025-07-04 12:00:00", "", "valid: summer time (EDT)"),
    ("2025-03-09 01:59:59", "", "valid: last second before the spring-forward gap"),
    ("2025-03-09 02:00:00", "time-dst-gap", "first second of the gap: clocks jump 02:00 -> 03:00"),
    ("2025-03-09 02:30:00", "time-dst-gap", "inside the gap: this wall time never happened"),
    ("2025-03-09 02:59:59", "time-dst-gap", "last second of the gap"),
    ("2025-03-09 03:00:00", "", "valid: first second after the gap (EDT)"),
    ("2024-03-10 02:15:00", "time-dst-gap", "the 2024 gap"),
    ("2025-11-02 00:59:59", "", "valid: last second before the fall-back fold"),
    ("2025-11-02 01:00:00", "time-dst-fold", "first second of the fold: 01:00-01:59 happens twice"),
    ("2025-11-02 01:30:00", "time-dst-fold", "inside the fold: EDT or EST?"),
    ("2025-11-02 01:59:59", "time-dst-fold", "last second of the fold"),
    ("2025-11-02 02:00:00", "", "valid: first second after the fold (EST)"),
    ("2024-11-03 01:45:00", "time-dst-fold", "the 2024 fold"),
    ("2025-12-24 18:30:00", "", "valid: winter time (EST)"),
]


def bad_times(rng: random.Random) -> list[list[str]]:
    rows = []
    for index, (local, expect, why) in enumerate(BAD_TIMES, start=1):
        experiment = rng.choice(list(EXPERIMENTS))
        row = {
            "order_id": f"POS-2025-8{index:05d}",
            "store_id": rng.choice(STORES),
            "customer_id": f"CUS-{rng.randrange(10_000, 9_999_999):07d}",
            "amount": money(rng.randrange(500, 20_000)),
            "currency": "USD",
            "ordered_at": local,
            "experiment_id": experiment,
            "variation_id": rng.choice(EXPERIMENTS[experiment]),
            "goal_ids": GOAL_PURCHASE,
            "event": "offline_purchase",
            "channel": "in_store",
            "expect": expect,
            "why": why,
        }
        parsed = datetime.strptime(local, "%Y-%m-%d %H:%M:%S")
        assert unambiguous(parsed, NEW_YORK) == (expect == ""), local
        rows.append([row[c] for c in BAD_TIMES_COLUMNS])
    return rows


# -- README -------------------------------------------------------------------------------


def rule_table(cases: Sequence[tuple[str, str, str]]) -> str:
    """Markdown rows: file line (header is line 1), expected rule codes, why."""
    lines = ["| line | expected rule(s) | what the row holds | order_id |", "|---:|---|---|---|"]
    for line, (expect, why, order) in enumerate(cases, start=2):
        rules = ", ".join(f"`{r}`" for r in expect.split()) or "valid"
        what = why.removeprefix("valid: ")
        lines.append(f"| {line} | {rules} | {what} | {order or '(empty)'} |")
    return "\n".join(lines)


def file_table(sales: int, views: int, web: int, bad: int, times: int) -> str:
    """Markdown table of the files: name, rows, schema, description, exit code of check."""
    files = [
        (
            "offline_sales.csv",
            sales,
            "offline_sales",
            'In-store (POS) orders of 2025: local New York times, amounts like `"1,234.56"`, '
            "repeat customers of whom about 10% have an email address as id (hashed with "
            "sha256), one or two goal ids, `channel` sent as segment "
            f"`s{CHANNEL_SEGMENT}`, `order_id` as dedupe key",
            0,
        ),
        (
            "offline_sales.parquet",
            sales,
            "offline_sales",
            "The same rows, every column a string: maps to the same URLs as the CSV",
            0,
        ),
        (
            "impressions.csv",
            views,
            "impressions",
            'Experiment impressions (`kind = "impression"`, so `g` is the experiment id), '
            "times in epoch milliseconds",
            0,
        ),
        (
            "optimizely_buckets.csv",
            web,
            "optimizely_buckets",
            "Web conversions whose experiments come from the URL-encoded `optimizelyBuckets` "
            f"cookie (e.g. `{SPEC_COOKIE}`), values in cents, ISO 8601 times with an offset",
            0,
        ),
        (
            "bad_rows.csv",
            bad,
            "bad_rows",
            "Test file: rows breaking each reject rule but the DST ones, and some valid rows",
            3,
        ),
        (
            "bad_times.csv",
            times,
            "bad_times",
            "Test file: local times in and next to the DST gap and fold of America/New_York",
            3,
        ),
    ]
    lines = ["| file | rows | schema | what it is | `check` exits |", "|---|---:|---|---|---:|"]
    for name, rows, schema, what, code in files:
        lines.append(f"| `{name}` | {rows} | `schemas/{schema}.toml` | {what} | {code} |")
    return "\n".join(lines)


def readme(
    sales: int, impressions_n: int, buckets_n: int, bad: list[list[str]], times: list[list[str]]
) -> str:
    order = BAD_ROWS_COLUMNS.index("order_id")
    bad_cases = [(c.expect, c.why, r[order]) for c, r in zip(BAD_ROWS, bad, strict=True)]
    time_cases = [(e, w, r[0]) for (_, e, w), r in zip(BAD_TIMES, times, strict=True)]
    return f"""# Sample data

Generated by `generate.py` (fixed seed, standard library + pyarrow): do not edit these files
by hand, change the generator and run it again:

    python sample_data/generate.py

All files use project id `{PROJECT_ID}` and account id `{ACCOUNT_ID}` (the Event API spec's
examples), experiments {", ".join(f"`{e}`" for e in EXPERIMENTS)} and goal ids
`{GOAL_PURCHASE}` and `{GOAL_REVENUE}`. None of it is real data.

{file_table(sales, impressions_n, buckets_n, len(bad), len(times))}

Try:

    event-backfill check sample_data/offline_sales.csv -s schemas/offline_sales.toml
    event-backfill preview sample_data/offline_sales.parquet -s schemas/offline_sales.toml -n 3
    event-backfill check sample_data/bad_rows.csv -s schemas/bad_rows.toml --rejects rejects.csv

Exit code 3 means "finished, some rows rejected"; the report counts rows per rule and
`--rejects` writes one line per broken rule.

## `bad_rows.csv`

Every rule code of `importer/rules.py` but `extract-no-match` (its schema needs an `extract`
pattern; `tests/test_filters.py` covers it) is broken by some line of `bad_rows.csv` or
`bad_times.csv`. The `expect` and `why` columns of the file repeat this table (the schema does
not read them). `time-no-zone` needs a schema without `time.timezone`, and the DST rules need
one with it, so the DST cases are in `bad_times.csv`. `url-too-long` only fires for rows that
are otherwise valid; `bad_rows.toml` lowers `checks.max_url_bytes` to 1000 for it. The
experiment pair is required, so a cookie alone does not make up for it (`experiment-missing`),
and `experiment-duplicate` fires when the cookie names the experiment of the column again.
`channel` is a required segment and `store_id` an optional one: a row with no store is valid,
a row with neither is rejected for the channel only. Lines count the header as line 1.

{rule_table(bad_cases)}

## `bad_times.csv`

Same columns as `offline_sales.csv` (plus `expect` and `why`), checked with
`schemas/bad_times.toml` (`timezone = "America/New_York"`, `on_dst_gap` and `on_dst_fold` =
`"reject"`). In 2025 clocks jump from 02:00 to 03:00 on 9 March and fall back from 02:00 to
01:00 on 2 November (in 2024: 10 March and 3 November).

{rule_table(time_cases)}

## `payments.csv`, `shop_orders.csv`: real-looking exports

Written by `generate_exports.py` (its own fixed seed, standard library only), with
`exports_truth.json`: the events each must send, and the rows it must filter and reject,
computed by the generator itself (never by `importer`). `tests/test_exports.py` holds the tool
to it.

- `payments.csv` (`schemas/payments.toml`): a payments provider's export, one row per charge:
  `Created (UTC)`, amounts like `1,234.56`, lower-case currencies, a `Status` of Paid / Failed
  / Refunded, the experiment in two metadata columns (empty for ~10% of charges), and five
  planted problems.
- `shop_orders.csv` (`schemas/shop_orders.toml`): a web shop's orders export, one row per line
  item, order-level fields on the first row of each order only, `Paid at` with the store's UTC
  offset, EUR/USD/JPY/KWD totals, the optimizelyBuckets cookie inside the multi-line
  `Note Attributes` cell, and four planted problems.

    python sample_data/generate_exports.py
    event-backfill check sample_data/payments.csv -s schemas/payments.toml
    event-backfill check sample_data/shop_orders.csv -s schemas/shop_orders.toml
"""


# -- main ---------------------------------------------------------------------------------


def main() -> None:
    rng = random.Random(SEED)

    sales = offline_sales(rng)
    assert len({r["order_id"] for r in sales}) == len(sales)
    write_csv(
        HERE / "offline_sales.csv", SALES_COLUMNS, [[r[c] for c in SALES_COLUMNS] for r in sales]
    )
    write_parquet(HERE / "offline_sales.parquet", SALES_COLUMNS, sales)

    views = impressions(rng)
    columns = ["user_id", "experiment_id", "variation_id", "timestamp"]
    write_csv(HERE / "impressions.csv", columns, [[r[c] for c in columns] for r in views])

    web = optimizely_buckets(rng)
    columns = ["visitor_id", "optimizelyBuckets", "event", "value_cents", "time"]
    write_csv(HERE / "optimizely_buckets.csv", columns, [[r[c] for c in columns] for r in web])

    bad = bad_rows(rng)
    write_csv(HERE / "bad_rows.csv", BAD_ROWS_COLUMNS, bad)
    # A generator of its own, so that adding a case to BAD_ROWS leaves bad_times.csv as it is.
    times = bad_times(random.Random(f"{SEED}-bad_times"))
    write_csv(HERE / "bad_times.csv", BAD_TIMES_COLUMNS, times)

    text = readme(len(sales), len(views), len(web), bad, times)
    (HERE / "README.md").write_text(text, encoding="utf-8", newline="")

    emails = {r["customer_id"] for r in sales if "@" in r["customer_id"]}
    print(
        f"wrote {len(sales)} sales ({len({r['customer_id'] for r in sales})} customers, "
        f"{len(emails)} with an email id), {len(views)} impressions, {len(web)} web events, "
        f"{len(bad)} bad rows, {len(times)} bad times to {HERE}"
    )


if __name__ == "__main__":
    main()
