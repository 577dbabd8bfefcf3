"""Generate two realistic data exports and the ground truth of what the importer must do with them.

Deterministic (fixed seeds, no clock, no network, standard library only). Run from anywhere:

    python sample_data/generate_exports.py

It (re)writes, next to itself, byte for byte the same each time:

``payments.csv`` -- a Stripe-like payments export, one row per charge (``schemas/payments.toml``)::

    id,Created (UTC),Amount,Amount Refunded,Currency,Status,Customer Email,Description,
    experiment_id (metadata),variation_id (metadata)

  ``id`` is ``ch_`` + 24 alphanumerics; ``Created (UTC)`` a UTC wall time
  (``2025-03-04 17:22:10``); ``Amount`` has ',' grouping thousands (``1,234.56``, jpy
  ``12,000``); currencies are lower-case; ``Status`` is ``Paid``, ``Failed`` or ``Refunded``;
  a customer's email comes in several letter cases, sometimes with surrounding spaces; the two
  metadata columns hold the customer's experiment and variation ids, both empty for customers
  who were never in an experiment. Newest charge first.

``shop_orders.csv`` -- a Shopify-like orders export, one row per line item
(``schemas/shop_orders.toml``)::

    Name,Email,Financial Status,Paid at,Fulfillment Status,Currency,Subtotal,Shipping,Total,
    Discount Code,Created at,Lineitem quantity,Lineitem name,Lineitem price,Lineitem sku,
    Note Attributes,Id

  An order (``#1001``, ``#1002``, ...) has 1-5 line items: its first row holds every
  order-level field, each continuation row only ``Name`` and the ``Lineitem *`` cells. Times
  are local with the store's offset (``2025-03-04 17:22:10 -0500``); amounts are plain decimals
  with the currency's minor digits (``1234.50``, JPY ``12000``, KWD ``12.345``).
  ``Note Attributes`` is a multi-line cell such as ``gift_wrap: no`` NEWLINE
  ``optimizelyBuckets: %7B%2220250101%22%3A%22301%22%7D`` (the URL-encoded JSON cookie of
  experiment id -> variation id); orders of customers never bucketed have no cookie line.

Each file hides a few "real problems" (a broken amount, an impossible date, an empty email, a
bad variation id or currency, a truncated cookie), one per row, among rows that would otherwise
be sent.

``exports_truth.json`` -- what the importer must do with each file, from this script's own
model of the data (the importer is never imported): ``rows``, ``expected_sent``,
``expected_filtered``, ``expected_rejected``, ``rejected_keys`` (key -> rule code) and
``events``, one per expected sent event: ``key`` (charge id / order Name), ``u`` (sha256 hex
of the trimmed, lower-cased email, no salt), ``x`` (experiment id -> variation id), ``v``
(amount in minor units), ``currency``, ``time`` (epoch seconds) and ``n`` (``purchase``).
Filtered rows are every row that is neither sent nor a planted problem.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

SEED = 20250630
HERE = Path(__file__).resolve().parent
START = datetime(2025, 1, 1, tzinfo=UTC)
END = datetime(2025, 7, 1, tzinfo=UTC)  # exclusive: the last second is 2025-06-30 23:59:59
EVENT_NAME = "purchase"

# Experiment id -> its variation ids, in both stores.
EXPERIMENTS: dict[str, list[str]] = {"20250101": ["301", "302"], "20250202": ["401", "402"]}

# Word lists, kept compact (one string each) rather than one name per line.
FIRST_NAMES = (  # noqa: SIM905
    "ana aisha bruno carlos chloe daniel elena emma farid grace hana ivan jakob julia kenji "
    "laura liam lucas maria mateo mia noah olga omar priya rafael sara sofia tom yuki zoe"
).split()
LAST_NAMES = (  # noqa: SIM905
    "lopez smith garcia muller rossi dubois silva kowalski tanaka nguyen khan cohen martin "
    "weber novak santos ivanova jensen brown moreau costa fischer sato haddad ali"
).split()
DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com"]


# -- helpers ------------------------------------------------------------------------------


def random_instant(rng: random.Random, start: datetime = START, end: datetime = END) -> datetime:
    """A whole second in [start, end)."""
    return start + timedelta(seconds=rng.randrange(int((end - start).total_seconds())))


def pick(rng: random.Random, weighted: Mapping[str, float]) -> str:
    """One key of ``weighted``, drawn with the values as weights."""
    return rng.choices(list(weighted), weights=list(weighted.values()))[0]


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cookie(buckets: dict[str, str]) -> str:
    """The optimizelyBuckets cookie value: URL-encoded compact JSON."""
    return quote(json.dumps(buckets, separators=(",", ":")), safe="")


def decimal_text(minor: int, digits: int, grouping: str = "") -> str:
    """Minor units as a decimal: (123456, 2, ',') -> '1,234.56'; (12000, 0) -> '12000'."""
    major = f"{minor // 10**digits:{grouping}d}"
    return f"{major}.{minor % 10**digits:0{digits}d}" if digits else major


def write_csv(path: Path, header: Sequence[str], rows: Sequence[dict[str, str]]) -> None:
    """A UTF-8 CSV with LF line ends; cells with commas, quotes or newlines are quoted."""
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# -- customers ----------------------------------------------------------------------------


@dataclass
class Customer:
    email: str  # canonical: trimmed and lower-case
    weight: float  # how often this customer buys, relative to the others
    buckets: dict[str, str]  # experiment id -> variation id; empty: never bucketed


def email_address(rng: random.Random) -> str:
    first, last, domain = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES), rng.choice(DOMAINS)
    local = rng.choice(
        [f"{first}.{last}", f"{first}{last}", f"{first[0]}{last}", f"{first}_{last}"]
    )
    if rng.random() < 0.2:
        local += str(rng.randrange(10, 100))
    return f"{local}@{domain}"


def title_case(email: str) -> str:
    """'ana.lopez@example.com' -> 'Ana.Lopez@Example.com'."""
    local, domain = email.split("@")
    return ".".join(p.capitalize() for p in local.split(".")) + "@" + domain.capitalize()


def email_cell(rng: random.Random, email: str) -> str:
    """The email as a person typed it: another letter case, sometimes with spaces around."""
    text = pick(rng, {email: 55, title_case(email): 30, email.upper(): 5, email.capitalize(): 10})
    padding = rng.random()
    if padding < 0.08:
        return " " + text
    if padding < 0.14:
        return text + "  "
    return text


def random_buckets(rng: random.Random, experiments: int) -> dict[str, str]:
    chosen = sorted(rng.sample(list(EXPERIMENTS), k=experiments))
    return {e: rng.choice(EXPERIMENTS[e]) for e in chosen}


def make_customers(rng: random.Random, count: int, never: float, two: float) -> list[Customer]:
    """``count`` customers with distinct emails; a share ``never`` was never bucketed, a share
    ``two`` is in both experiments, the others in one."""
    emails: dict[str, None] = {}
    while len(emails) < count:
        emails[email_address(rng)] = None
    customers = []
    for email in emails:
        draw = rng.random()
        experiments = 0 if draw < never else 2 if draw < never + two else 1
        weight = rng.lognormvariate(0, 0.6)
        customers.append(Customer(email, weight, random_buckets(rng, experiments)))
    return customers


def choose_customer(rng: random.Random, customers: Sequence[Customer]) -> Customer:
    return rng.choices(customers, weights=[c.weight for c in customers])[0]


# -- payments.csv -------------------------------------------------------------------------

PAYMENT_COLUMNS = [
    "id",
    "Created (UTC)",
    "Amount",
    "Amount Refunded",
    "Currency",
    "Status",
    "Customer Email",
    "Description",
    "experiment_id (metadata)",
    "variation_id (metadata)",
]
PAYMENT_STATUS = {"Paid": 79, "Failed": 13, "Refunded": 8}
PAYMENT_CURRENCY = {"usd": 50, "eur": 25, "gbp": 15, "jpy": 10}
PAYMENT_DIGITS = {"usd": 2, "eur": 2, "gbp": 2, "jpy": 0}
ALPHANUMERIC = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
DESCRIPTIONS = [
    "Subscription update",
    "Pro plan, annual",
    "Starter plan (monthly)",
    "Team plan, 5 seats",
    "Invoice INV-{n}",
    "Payment for invoice INV-{n}, thank you",
    "Order #{n}: 2 x Mug, 1 x Poster",
    "Gift card",
    'Upgrade to "Business"',
    "",
]
# Rule code of each planted problem -> the cells it overwrites (the first goes on variation 301).
PAYMENT_PROBLEMS: dict[str, dict[str, str]] = {
    "variation-id-format": {"variation_id (metadata)": "30l"},
    "value-format": {"Amount": "n/a"},
    "time-format": {"Created (UTC)": "2025-02-30 10:00:00"},
    "user-id-empty": {"Customer Email": ""},
    "currency-unknown": {"Currency": "xyz"},
}


@dataclass
class Charge:
    id: str
    created: datetime
    minor: int
    currency: str  # lower-case, as written
    status: str
    customer: Customer
    description: str
    cells: dict[str, str] | None = None  # the CSV row, once written
    problem: str | None = None  # the rule code of a planted problem


def charge_id(rng: random.Random, taken: set[str]) -> str:
    while True:
        candidate = "ch_" + "".join(rng.choices(ALPHANUMERIC, k=24))
        if candidate not in taken:
            taken.add(candidate)
            return candidate


def charge_amount(rng: random.Random, currency: str) -> int:
    """Minor units, log-uniform: 5.00-4,000.00, or 500-500,000 yen in tens."""
    if currency == "jpy":
        return int(10 ** rng.uniform(2.7, 5.7)) // 10 * 10
    return int(10 ** rng.uniform(2.7, 5.6))


def description(rng: random.Random) -> str:
    return rng.choice(DESCRIPTIONS).format(n=rng.randrange(10_000, 99_999))


def make_charges(rng: random.Random, count: int) -> list[Charge]:
    customers = make_customers(rng, 400, never=0.1, two=0.0)
    taken: set[str] = set()
    charges = []
    for _ in range(count):
        currency = pick(rng, PAYMENT_CURRENCY)
        charge = Charge(
            id=charge_id(rng, taken),
            created=random_instant(rng),
            minor=charge_amount(rng, currency),
            currency=currency,
            status=pick(rng, PAYMENT_STATUS),
            customer=choose_customer(rng, customers),
            description=description(rng),
        )
        charges.append(charge)
    charges.sort(key=lambda c: (c.created, c.id), reverse=True)  # newest first, as exported
    return charges


def charge_cells(rng: random.Random, charge: Charge) -> dict[str, str]:
    amount = decimal_text(charge.minor, PAYMENT_DIGITS[charge.currency], ",")
    experiment, variation = next(iter(charge.customer.buckets.items()), ("", ""))
    return {
        "id": charge.id,
        "Created (UTC)": charge.created.strftime("%Y-%m-%d %H:%M:%S"),
        "Amount": amount,
        "Amount Refunded": amount if charge.status == "Refunded" else "0.00",
        "Currency": charge.currency,
        "Status": charge.status,
        "Customer Email": email_cell(rng, charge.customer.email),
        "Description": charge.description,
        "experiment_id (metadata)": experiment,
        "variation_id (metadata)": variation,
    }


def payment_sendable(charge: Charge) -> bool:
    """Whether the charge passes the schema's filters: Paid, and in an experiment."""
    return charge.status == "Paid" and bool(charge.customer.buckets)


def plant_payment_problems(rng: random.Random, charges: Sequence[Charge]) -> None:
    """Break five sendable charges, each with another defect."""
    candidates = [c for c in charges if payment_sendable(c)]
    # '30l' (letter l) is a typo of variation 301, so it goes on a charge of that variation.
    in_301 = [c for c in candidates if c.customer.buckets.get("20250101") == "301"]
    bad_variation = rng.choice(in_301)
    others = rng.sample([c for c in candidates if c is not bad_variation], k=4)
    for charge, rule in zip([bad_variation, *others], PAYMENT_PROBLEMS, strict=True):
        charge.problem = rule
        assert charge.cells is not None
        charge.cells.update(PAYMENT_PROBLEMS[rule])


def charge_event(charge: Charge) -> dict[str, Any]:
    return {
        "key": charge.id,
        "u": sha256_hex(charge.customer.email),
        "x": dict(charge.customer.buckets),
        "v": charge.minor,
        "currency": charge.currency.upper(),
        "time": int(charge.created.timestamp()),
        "n": EVENT_NAME,
    }


def payments(rng: random.Random, count: int = 2000) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The rows of payments.csv and their truth."""
    charges = make_charges(rng, count)
    for charge in charges:
        charge.cells = charge_cells(rng, charge)
    plant_payment_problems(rng, charges)
    rows = [c.cells for c in charges if c.cells is not None]
    sent = [c for c in charges if payment_sendable(c) and c.problem is None]
    rejected = {c.id: c.problem for c in charges if c.problem is not None}
    filtered = {
        "Status not Paid": sum(c.status != "Paid" for c in charges),
        "Paid, no experiment": sum(c.status == "Paid" and not c.customer.buckets for c in charges),
    }
    truth = summary("payments", len(rows), len(sent), filtered, rejected)
    truth["events"] = [charge_event(c) for c in sent]
    return rows, truth


# -- shop_orders.csv ----------------------------------------------------------------------

ORDER_COLUMNS = [
    "Name",
    "Email",
    "Financial Status",
    "Paid at",
    "Fulfillment Status",
    "Currency",
    "Subtotal",
    "Shipping",
    "Total",
    "Discount Code",
    "Created at",
    "Lineitem quantity",
    "Lineitem name",
    "Lineitem price",
    "Lineitem sku",
    "Note Attributes",
    "Id",
]
LINE_ITEM_COLUMNS = ["Lineitem quantity", "Lineitem name", "Lineitem price", "Lineitem sku"]
FINANCIAL_STATUS = {"paid": 75, "pending": 8, "refunded": 7, "voided": 4, "partially_refunded": 6}
PAID_STATUSES = {"paid", "refunded", "partially_refunded"}  # those have a "Paid at"
ORDER_CURRENCY = {"EUR": 40, "USD": 35, "JPY": 15, "KWD": 10}
ORDER_DIGITS = {"EUR": 2, "USD": 2, "JPY": 0, "KWD": 3}
# Major units per US dollar, and the step prices are rounded to, in minor units.
EXCHANGE = {"USD": (1.0, 1), "EUR": (0.92, 10), "JPY": (150.0, 10), "KWD": (0.307, 5)}
SHIPPING = {"USD": 599, "EUR": 490, "JPY": 800, "KWD": 1500}  # minor units
FREE_SHIPPING_FROM = {"USD": 7500, "EUR": 7000, "JPY": 10000, "KWD": 25000}
OFFSETS = ["-0500", "-0400", "+0100", "+0900", "+0300"]
DISCOUNTS = {"": 85, "WELCOME10": 8, "SPRING15": 5, "VIP20": 2}  # code -> weight
DISCOUNT_PERCENT = {"": 0, "WELCOME10": 10, "SPRING15": 15, "VIP20": 20}
# (name, sku, price in US cents); some names hold a comma.
CATALOG = [
    ("Linen Shirt - Blue, M", "LS-BLU-M", 5900),
    ("Linen Shirt - Blue, L", "LS-BLU-L", 5900),
    ("Linen Shirt - Sand, M", "LS-SND-M", 5900),
    ("Organic Tee - White", "OT-WHT", 2400),
    ("Organic Tee - Black", "OT-BLK", 2400),
    ("Wool Beanie", "WB-GRY", 2900),
    ("Canvas Tote Bag", "CTB-NAT", 1900),
    ("Leather Wallet, slim", "LW-SLM", 4900),
    ("Ceramic Mug 350 ml", "CM-350", 1600),
    ("Espresso Cups, set of 2", "EC-SET2", 2200),
    ('Poster "Harbour at Dawn" 50x70', "PO-HAD", 3500),
    ("Notebook A5, dotted", "NB-A5-D", 1200),
    ("Fountain Pen", "FP-STL", 8900),
    ("Rain Jacket - Olive, M", "RJ-OLV-M", 14900),
    ("Running Socks (3 pairs)", "RS-3P", 1800),
    ("Gift Card", "GC-50", 5000),
    ("Desk Lamp", "DL-BRS", 12900),
    ("Scented Candle - Fig", "SC-FIG", 2600),
]
SHOP_PROBLEMS = ["buckets-invalid", "value-format", "time-format", "user-id-empty"]


@dataclass
class LineItem:
    name: str
    sku: str
    quantity: int
    price: int  # minor units of the order's currency


@dataclass
class Order:
    name: str
    number: int  # the numeric Id
    customer: Customer
    status: str
    currency: str
    offset: str  # "+0100"
    created: datetime
    paid: datetime | None
    items: list[LineItem]
    discount_code: str
    gift_wrap: str  # "yes", "no" or "" (no attribute)
    cells: list[dict[str, str]] | None = None  # the CSV rows, once written
    problem: str | None = None

    @property
    def subtotal(self) -> int:
        """Line items minus the discount, in minor units."""
        gross = sum(item.quantity * item.price for item in self.items)
        return gross - gross * DISCOUNT_PERCENT[self.discount_code] // 100

    @property
    def shipping(self) -> int:
        return 0 if self.subtotal >= FREE_SHIPPING_FROM[self.currency] else SHIPPING[self.currency]

    @property
    def total(self) -> int:
        return self.subtotal + self.shipping


def local_price(us_cents: int, currency: str) -> int:
    """The catalog price in the currency's minor units, rounded to its step."""
    rate, step = EXCHANGE[currency]
    minor = us_cents * rate * 10.0 ** ORDER_DIGITS[currency] / 100
    return max(step, round(minor / step) * step)


def line_items(rng: random.Random, currency: str) -> list[LineItem]:
    count = rng.choices([1, 2, 3, 4, 5], weights=[25, 25, 20, 15, 15])[0]
    items = []
    for name, sku, us_cents in rng.sample(CATALOG, k=count):
        quantity = rng.choices([1, 2, 3], weights=[80, 15, 5])[0]
        items.append(LineItem(name, sku, quantity, local_price(us_cents, currency)))
    return items


def make_order(rng: random.Random, index: int, created: datetime, customer: Customer) -> Order:
    currency = pick(rng, ORDER_CURRENCY)
    status = pick(rng, FINANCIAL_STATUS)
    paid = created + timedelta(seconds=rng.randrange(2, 900)) if status in PAID_STATUSES else None
    return Order(
        name=f"#{1001 + index}",
        number=0,  # set by make_orders
        customer=customer,
        status=status,
        currency=currency,
        offset=rng.choice(OFFSETS),
        created=created,
        paid=paid,
        items=line_items(rng, currency),
        discount_code=pick(rng, DISCOUNTS),
        gift_wrap=rng.choice(["no", "no", "no", "yes"]),
    )


def make_orders(rng: random.Random, count: int) -> list[Order]:
    customers = make_customers(rng, 700, never=0.15, two=0.35)
    times = sorted(random_instant(rng, START, END - timedelta(hours=1)) for _ in range(count))
    orders = [make_order(rng, i, t, choose_customer(rng, customers)) for i, t in enumerate(times)]
    number = 5871234000000
    for order in orders:  # Ids grow with the order number, with gaps (other stores' orders)
        number += rng.randrange(1, 40)
        order.number = number
    return orders


def local_time(instant: datetime | None, offset: str) -> str:
    """'2025-03-04 17:22:10 -0500': the instant as the store's wall time, with its offset."""
    if instant is None:
        return ""
    sign = -1 if offset[0] == "-" else 1
    zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:])))
    return instant.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %z")


def note_attributes(order: Order) -> str:
    """``gift_wrap: no`` NEWLINE ``optimizelyBuckets: ...``; no cookie if never bucketed."""
    if order.customer.buckets:
        return f"gift_wrap: {order.gift_wrap}\noptimizelyBuckets: {cookie(order.customer.buckets)}"
    return "gift_wrap: yes" if order.gift_wrap == "yes" else ""


def order_first_row(rng: random.Random, order: Order) -> dict[str, str]:
    digits = ORDER_DIGITS[order.currency]
    return {
        "Name": order.name,
        "Email": email_cell(rng, order.customer.email),
        "Financial Status": order.status,
        "Paid at": local_time(order.paid, order.offset),
        "Fulfillment Status": fulfillment(rng, order.status),
        "Currency": order.currency,
        "Subtotal": decimal_text(order.subtotal, digits),
        "Shipping": decimal_text(order.shipping, digits),
        "Total": decimal_text(order.total, digits),
        "Discount Code": order.discount_code,
        "Created at": local_time(order.created, order.offset),
        "Note Attributes": note_attributes(order),
        "Id": str(order.number),
    }


def fulfillment(rng: random.Random, status: str) -> str:
    if status in ("pending", "voided"):
        return "unfulfilled"
    return pick(rng, {"fulfilled": 70, "unfulfilled": 25, "partial": 5})


def order_rows(rng: random.Random, order: Order) -> list[dict[str, str]]:
    """The first row with every order-level cell, then one row per further line item."""
    digits = ORDER_DIGITS[order.currency]
    rows = []
    for index, item in enumerate(order.items):
        row = dict.fromkeys(ORDER_COLUMNS, "")
        if index == 0:
            row.update(order_first_row(rng, order))
        row["Name"] = order.name
        row["Lineitem quantity"] = str(item.quantity)
        row["Lineitem name"] = item.name
        row["Lineitem price"] = decimal_text(item.price, digits)
        row["Lineitem sku"] = item.sku
        rows.append(row)
    return rows


def order_sendable(order: Order) -> bool:
    """Whether the order's first row passes the schema's filters: paid, with a cookie."""
    return order.status == "paid" and bool(order.customer.buckets)


def plant_shop_problems(rng: random.Random, orders: Sequence[Order]) -> None:
    """Break four sendable orders, each with another defect (on its first row)."""
    candidates = [o for o in orders if order_sendable(o)]
    starts_2025 = [o for o in candidates if next(iter(o.customer.buckets)) == "20250101"]
    truncated = rng.choice(starts_2025)
    others = rng.sample([o for o in candidates if o is not truncated], k=3)
    for order, rule in zip([truncated, *others], SHOP_PROBLEMS, strict=True):
        order.problem = rule
        assert order.cells is not None
        order.cells[0].update(shop_defect(order))


def shop_defect(order: Order) -> dict[str, str]:
    """The cells of the first row a planted problem overwrites."""
    assert order.problem is not None and order.cells is not None
    note = order.cells[0]["Note Attributes"]
    full = cookie(order.customer.buckets)
    return {
        # Cut after the first key: '%7B%2220250101%22%3A' is not a JSON object.
        "buckets-invalid": {"Note Attributes": note.replace(full, full[: full.index("%3A") + 3])},
        "value-format": {"Total": "12,34"},
        "time-format": {"Paid at": "2025-13-01 10:00:00 +0100"},
        "user-id-empty": {"Email": ""},
    }[order.problem]


def order_event(order: Order) -> dict[str, Any]:
    assert order.paid is not None
    return {
        "key": order.name,
        "u": sha256_hex(order.customer.email),
        "x": dict(order.customer.buckets),
        "v": order.total,
        "currency": order.currency,
        "time": int(order.paid.timestamp()),
        "n": EVENT_NAME,
    }


def shop_orders(
    rng: random.Random, count: int = 1500
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The rows of shop_orders.csv and their truth."""
    orders = make_orders(rng, count)
    for order in orders:
        order.cells = order_rows(rng, order)
    plant_shop_problems(rng, orders)
    rows = [row for order in orders for row in order.cells or []]
    sent = [o for o in orders if order_sendable(o) and o.problem is None]
    rejected = {o.name: o.problem for o in orders if o.problem is not None}
    filtered = {
        "continuation row": len(rows) - len(orders),
        "Financial Status not paid": sum(o.status != "paid" for o in orders),
        "paid, no optimizelyBuckets": sum(
            o.status == "paid" and not o.customer.buckets for o in orders
        ),
    }
    truth = summary("shop_orders", len(rows), len(sent), filtered, rejected)
    truth["orders"] = len(orders)
    truth["events"] = [order_event(o) for o in sent]
    return rows, truth


# -- truth --------------------------------------------------------------------------------


def summary(
    name: str, rows: int, sent: int, filtered: dict[str, int], rejected: dict[str, str]
) -> dict[str, Any]:
    """The counts of one file's truth; ``filtered`` counts the filtered rows per reason."""
    return {
        "file": f"sample_data/{name}.csv",
        "schema": f"schemas/{name}.toml",
        "rows": rows,
        "expected_sent": sent,
        "expected_filtered": sum(filtered.values()),
        "expected_rejected": len(rejected),
        "rejected_keys": rejected,
        "filtered_reasons": filtered,
    }


def json_text(value: object, indent: str = "") -> str:
    """JSON with objects spread over lines and each list item (an event) on one line."""
    inner = indent + "  "
    if isinstance(value, dict) and value:
        body = ",\n".join(
            f"{inner}{json.dumps(k)}: {json_text(v, inner)}" for k, v in value.items()
        )
        return "{\n" + body + "\n" + indent + "}"
    if isinstance(value, list) and value:
        body = ",\n".join(inner + json.dumps(item) for item in value)
        return "[\n" + body + "\n" + indent + "]"
    return json.dumps(value)


def main() -> None:
    payment_rows, payment_truth = payments(random.Random(f"{SEED}-payments"))
    write_csv(HERE / "payments.csv", PAYMENT_COLUMNS, payment_rows)
    shop_rows, shop_truth = shop_orders(random.Random(f"{SEED}-shop_orders"))
    write_csv(HERE / "shop_orders.csv", ORDER_COLUMNS, shop_rows)
    truth = {"generator": "sample_data/generate_exports.py", "seed": SEED}
    truth |= {"payments": payment_truth, "shop_orders": shop_truth}
    for part in (payment_truth, shop_truth):
        accounted = part["expected_sent"] + part["expected_filtered"] + part["expected_rejected"]
        assert accounted == part["rows"], part["file"]
    (HERE / "exports_truth.json").write_text(json_text(truth) + "\n", encoding="utf-8", newline="")
    for part in (payment_truth, shop_truth):
        print(
            f"{part['file']}: {part['rows']} rows, {part['expected_sent']} sent, "
            f"{part['expected_filtered']} filtered, {part['expected_rejected']} rejected"
        )


if __name__ == "__main__":
    main()
