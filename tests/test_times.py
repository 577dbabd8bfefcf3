"""Tests for importer.times: units, zones, DST gaps and folds, limits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from importer.rules import Violations
from importer.schema import Checks, TimeField
from importer.times import parse_times

from .conftest import NOW


def run(
    cells: pa.Array | list[Any], checks: Checks | None = None, **options: Any
) -> tuple[list[Any], dict[str, list[int]]]:
    """Parse a time column; return epoch seconds and the rows per broken rule."""
    array = cells if isinstance(cells, pa.Array) else pa.array(cells)
    spec = TimeField(column="ts", **options)
    found = Violations(len(array))
    seconds = parse_times(array, spec, checks or Checks(), NOW, found).to_pylist()
    return seconds, {v.rule: [int(i) for i in v.mask.nonzero()[0]] for v in found.items}


def utc(*args: int) -> int:
    """Epoch seconds of a UTC datetime."""
    return int(datetime(*args, tzinfo=UTC).timestamp())  # type: ignore[misc]


def test_epoch_units_by_magnitude() -> None:
    """Seconds, milliseconds, microseconds and nanoseconds are told apart by size."""
    values, rules = run(["1462472175", "1462472175123", "1462472175123456", "1462472175123456789"])
    assert (values, rules) == ([1462472175] * 4, {})


def test_explicit_epoch_unit() -> None:
    """epoch_unit = "ms" divides every value, small ones included."""
    assert run(["1462472175123", "5000"], epoch_unit="ms") == ([1462472175, 5], {})


def test_integer_and_float_columns() -> None:
    """Native numbers work; fractions are floored; NaN is refused."""
    assert run(pa.array([1462472175, 1462472175123], pa.int64())) == ([1462472175] * 2, {})
    assert run(pa.array([1462472175.9, float("nan")])) == ([1462472175, None], {"time-format": [1]})


def test_iso_with_offsets() -> None:
    """ISO 8601 with Z, +hh:mm, +hhmm and fractions gives the same instant."""
    values, rules = run(
        [
            "2016-05-05T18:16:15Z",
            "2016-05-05T20:16:15+02:00",
            "2016-05-05 13:16:15.999-05:00",
            "2016-05-05T20:16:15+0200",
        ]
    )
    assert (values, rules) == ([1462472175] * 4, {})


def test_naive_times_use_the_zone() -> None:
    """A wall time is placed in the schema's IANA zone (EDT is UTC-4 in May)."""
    values, rules = run(["2016-05-05 14:16:15", "2016-05-05T14:16:15"], timezone="America/New_York")
    assert (values, rules) == ([1462472175] * 2, {})


def test_naive_time_without_zone_is_refused() -> None:
    """No timezone and no offset: refused, never assumed UTC."""
    assert run(["2016-05-05 14:16:15"], format="iso") == ([None], {"time-no-zone": [0]})


def test_dst_gap_and_fold_are_refused_by_default() -> None:
    """02:30 on 2024-03-10 does not exist in New York; 01:30 on 2024-11-03 happens twice."""
    values, rules = run(
        ["2024-03-10 02:30:00", "2024-11-03 01:30:00", "2024-11-03 03:30:00"],
        timezone="America/New_York",
    )
    assert values == [None, None, utc(2024, 11, 3, 8, 30)]
    assert rules == {"time-dst-fold": [1], "time-dst-gap": [0]}


def test_dst_rules_when_resolved() -> None:
    """Gaps shift forward by the gap (02:30 EST = 03:30 EDT); folds take the chosen offset."""
    cells = ["2024-03-10 02:30:00", "2024-11-03 01:30:00"]
    early, rules = run(
        cells, timezone="America/New_York", on_dst_gap="shift_forward", on_dst_fold="earliest"
    )
    assert (early, rules) == ([utc(2024, 3, 10, 7, 30), utc(2024, 11, 3, 5, 30)], {})
    late, _ = run(
        cells, timezone="America/New_York", on_dst_gap="shift_forward", on_dst_fold="latest"
    )
    assert late == [utc(2024, 3, 10, 7, 30), utc(2024, 11, 3, 6, 30)]


def test_strptime_pattern() -> None:
    """A day-first pattern in a zone."""
    values, rules = run(
        ["05/05/2016 20:16", "31/02/2016 10:00"], format="%d/%m/%Y %H:%M", timezone="Europe/Paris"
    )
    assert values == [1462472160, None]
    assert rules == {"time-format": [1]}


def test_missing_and_garbage() -> None:
    """An empty or null time is a reject, never now; garbage is a format error."""
    values, rules = run(["", None, "yesterday", "2016-13-45T00:00:00Z"], timezone="UTC")
    assert values == [None] * 4
    assert rules == {"time-missing": [0, 1], "time-format": [2, 3]}


def test_window_checks() -> None:
    """Too old and too far in the future are refused; small skew is allowed."""
    checks = Checks(oldest=datetime(2020, 1, 1).date(), max_future_seconds=300)
    values, rules = run([str(utc(2019, 12, 31)), str(NOW + 299), str(NOW + 301)], checks)
    assert values == [None, NOW + 299, None]
    assert rules == {"time-too-old": [0], "time-future": [2]}


def test_max_age_days() -> None:
    """max_age_days counts back from now."""
    checks = Checks(max_age_days=30)
    values, rules = run([str(NOW - 29 * 86400), str(NOW - 31 * 86400)], checks)
    assert (values, rules) == ([NOW - 29 * 86400, None], {"time-too-old": [1]})


def test_timestamp_columns() -> None:
    """Parquet timestamps: aware ones are instants, naive ones are wall times in the zone."""
    aware = pa.array([1462472175_000], pa.timestamp("ms", tz="UTC"))
    assert run(aware) == ([1462472175], {})
    naive = pa.array([datetime(2016, 5, 5, 14, 16, 15)], pa.timestamp("us"))
    assert run(naive, timezone="America/New_York") == ([1462472175], {})
