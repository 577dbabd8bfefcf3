"""Write the sample project's datafile and the two files that test it (fixed, no clock).

Run from anywhere:

    python sample_data/generate_datafile.py

It (re)writes, next to itself:

* ``datafile.json``: the datafile of the sample project (project ``1234567``, account
  ``8511325``), in the format the Optimizely SDKs download: every experiment, variation,
  event (goal) and attribute the other sample files use, a paused experiment and an event
  attached to one experiment only;
* ``datafile_ids.csv`` (``schemas/datafile_ids.toml``): orders with ids, rows breaking each
  datafile rule (project-mismatch, account-mismatch, experiment-unknown, variation-unknown,
  goal-unknown) and each warning (goal-not-in-experiment, experiment-not-running);
* ``datafile_keys.csv`` (``schemas/datafile_keys.toml``): the same kind of orders naming
  experiments, variations and events by key, with keys that do not resolve.

The ``expect`` column of each CSV says what ``check --datafile sample_data/datafile.json``
finds on that row (``valid``, rule codes, or ``warn:`` and a warning code); ``why`` says why.
Only the standard library is used; the importer is not imported.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT_ID = "1234567"
ACCOUNT_ID = "8511325"
REVISION = "42"


def experiment(
    id_: str, key: str, status: str, variations: list[tuple[str, str]]
) -> dict[str, Any]:
    """An experiment as the datafile holds it (traffic split evenly)."""
    share = 10_000 // len(variations)
    return {
        "id": id_,
        "key": key,
        "status": status,
        "layerId": f"9{id_}",
        "audienceIds": [],
        "forcedVariations": {},
        "variations": [{"id": v, "key": k, "variables": []} for v, k in variations],
        "trafficAllocation": [
            {"entityId": v, "endOfRange": share * (i + 1)} for i, (v, _) in enumerate(variations)
        ],
    }


POS = ["987654321", "876543210", "765432109"]  # the POS files' experiments (generate.py)

DATAFILE: dict[str, Any] = {
    "version": "4",
    "projectId": PROJECT_ID,
    "accountId": ACCOUNT_ID,
    "revision": REVISION,
    "anonymizeIP": True,
    "botFiltering": False,
    "experiments": [
        experiment(
            "987654321",
            "checkout_button",
            "Running",
            [("1111111", "control"), ("1111112", "green_button")],
        ),
        # generate.py sends the variation "2222222_3333333": both parts are variations here.
        experiment(
            "876543210",
            "product_page_layout",
            "Running",
            [("2222222", "control"), ("3333333", "gallery"), ("2222223", "reviews_first")],
        ),
        experiment(
            "765432109",
            "free_shipping_banner",
            "Running",
            [("4444444", "control"), ("4444445", "banner_top"), ("4444446", "banner_bottom")],
        ),
        experiment(
            "654321098", "holiday_theme", "Paused", [("5555551", "control"), ("5555552", "snow")]
        ),
    ],
    # The payments and shop exports' experiments (generate_exports.py), in a mutual
    # exclusion group as the SDKs' datafile puts them.
    "groups": [
        {
            "id": "19000001",
            "policy": "random",
            "trafficAllocation": [
                {"entityId": "20250101", "endOfRange": 5000},
                {"entityId": "20250202", "endOfRange": 10000},
            ],
            "experiments": [
                experiment(
                    "20250101",
                    "pricing_table",
                    "Running",
                    [("301", "control"), ("302", "annual_first")],
                ),
                experiment(
                    "20250202",
                    "one_page_checkout",
                    "Running",
                    [("401", "control"), ("402", "one_page")],
                ),
            ],
        }
    ],
    "events": [
        {"id": "12345", "key": "offline_purchase", "experimentIds": [*POS, "654321098"]},
        {"id": "4324234", "key": "revenue", "experimentIds": [*POS, "654321098"]},
        {"id": "5550001", "key": "purchase", "experimentIds": ["20250101", "20250202", *POS]},
        {"id": "7777777", "key": "newsletter_signup", "experimentIds": ["765432109"]},
    ],
    "attributes": [{"id": "983745985", "key": "channel"}, {"id": "983745986", "key": "store"}],
    "audiences": [],
    "typedAudiences": [],
    "featureFlags": [],
    "rollouts": [],
}

IDS_HEADER = [
    "order_id",
    "project_id",
    "account_id",
    "customer_id",
    "event",
    "experiment_id",
    "variation_id",
    "goal_ids",
    "amount",
    "ordered_at",
    "expect",
    "why",
]
# project, account, experiment, variation, goals, expect, why
IDS_ROWS = [
    ("1234567", "8511325", "987654321", "1111111", "12345", "valid", "the reference row"),
    (
        "1234567",
        "8511325",
        "876543210",
        "2222222_3333333",
        "12345,4324234",
        "valid",
        "a variation joined by '_': each part is a variation of the experiment",
    ),
    (
        "1234567",
        "8511325",
        "20250101",
        "302",
        "5550001",
        "valid",
        "an experiment inside a group (groups[].experiments)",
    ),
    (
        "7654321",
        "8511325",
        "987654321",
        "1111111",
        "12345",
        "project-mismatch",
        "another project's id",
    ),
    (
        "1234567",
        "8511326",
        "987654321",
        "1111111",
        "12345",
        "account-mismatch",
        "another account's id",
    ),
    (
        "1234567",
        "8511325",
        "111111111",
        "1111111",
        "12345",
        "experiment-unknown",
        "no such experiment in the datafile",
    ),
    (
        "1234567",
        "8511325",
        "987654321",
        "4444444",
        "12345",
        "variation-unknown",
        "4444444 is a variation of another experiment (765432109)",
    ),
    (
        "1234567",
        "8511325",
        "876543210",
        "2222222_9999999",
        "12345",
        "variation-unknown",
        "one part of the '_'-joined variation is unknown",
    ),
    (
        "1234567",
        "8511325",
        "987654321",
        "1111111",
        "99999",
        "goal-unknown",
        "no such event in the datafile",
    ),
    (
        "1234567",
        "8511325",
        "987654321",
        "1111112",
        "12345,99999",
        "goal-unknown",
        "one of two goals is unknown",
    ),
    (
        "1234567",
        "8511325",
        "987654321",
        "1111111",
        "7777777",
        "warn:goal-not-in-experiment",
        "newsletter_signup is attached to 765432109 only: sent, but it will not count",
    ),
    (
        "1234567",
        "8511325",
        "654321098",
        "5555552",
        "12345",
        "warn:experiment-not-running",
        "holiday_theme is Paused: sent, with a warning",
    ),
    (
        "7654321",
        "8511325",
        "111111111",
        "1111111",
        "12345",
        "project-mismatch experiment-unknown",
        "one row can break several rules",
    ),
    (
        "1234567",
        "8511325",
        "765432109",
        "4444446",
        "7777777,12345",
        "valid",
        "two goals, both attached to the experiment",
    ),
]

KEYS_HEADER = [
    "order_id",
    "customer_id",
    "event",
    "experiment",
    "variation",
    "amount",
    "ordered_at",
    "channel",
    "expect",
    "why",
]
# event key, experiment key, variation key, channel, expect, why
KEYS_ROWS = [
    (
        "offline_purchase",
        "checkout_button",
        "green_button",
        "in_store",
        "valid",
        "x987654321=1111112, g=12345, s983745985=in_store",
    ),
    (
        "purchase",
        "pricing_table",
        "annual_first",
        "web",
        "valid",
        "a group's experiment by key: x20250101=302, g=5550001",
    ),
    (
        "revenue",
        "product_page_layout",
        "gallery",
        "curbside",
        "valid",
        "x876543210=3333333, g=4324234",
    ),
    (
        "offline_purchase",
        "checkout_buton",
        "control",
        "in_store",
        "experiment-unknown",
        "a typo in the experiment key",
    ),
    (
        "offline_purchase",
        "checkout_button",
        "gallery",
        "in_store",
        "variation-unknown",
        "gallery is a variation of another experiment",
    ),
    (
        "offline_purchse",
        "checkout_button",
        "control",
        "in_store",
        "goal-unknown",
        "a typo in the event key",
    ),
    (
        "newsletter_signup",
        "checkout_button",
        "control",
        "web",
        "warn:goal-not-in-experiment",
        "the event is not attached to checkout_button: sent, but it will not count",
    ),
    (
        "offline_purchase",
        "holiday_theme",
        "snow",
        "web",
        "warn:experiment-not-running",
        "holiday_theme is Paused",
    ),
    (
        "offline_purchase",
        "",
        "",
        "web",
        "experiment-missing",
        "no experiment key at all (a rule without the datafile too)",
    ),
    (
        "offline_purchase",
        "free_shipping_banner",
        "banner_top",
        "",
        "valid",
        "channel empty: the segment is left out",
    ),
]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def main() -> None:
    text = json.dumps(DATAFILE, indent=2) + "\n"
    (HERE / "datafile.json").write_text(text, encoding="utf-8")
    ids = [
        [
            f"DF-2025-{100 + i}",
            project,
            account,
            f"CUS-{7000 + i}",
            "offline_purchase",
            exp,
            var,
            goals,
            f"{19 + i}.99",
            f"2025-03-{1 + i:02d}T12:00:00Z",
            expect,
            why,
        ]
        for i, (project, account, exp, var, goals, expect, why) in enumerate(IDS_ROWS)
    ]
    write_csv(HERE / "datafile_ids.csv", IDS_HEADER, ids)
    keys = [
        [
            f"DK-2025-{100 + i}",
            f"CUS-{8000 + i}",
            event,
            exp,
            var,
            f"{29 + i}.50",
            f"2025-04-{1 + i:02d}T09:30:00Z",
            channel,
            expect,
            why,
        ]
        for i, (event, exp, var, channel, expect, why) in enumerate(KEYS_ROWS)
    ]
    write_csv(HERE / "datafile_keys.csv", KEYS_HEADER, keys)


if __name__ == "__main__":
    main()
