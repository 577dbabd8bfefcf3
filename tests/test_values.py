"""Tests for importer.values: exact money, never through float."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from importer.rules import Violations
from importer.schema import ValueField
from importer.values import parse_values


def run(
    cells: list[str], currency: list[str] | None = None, **options: Any
) -> tuple[list[Any], dict[str, list[int]]]:
    """Parse cells; return the values and, per rule, the rows that broke it."""
    spec = ValueField(column="amount", **options)
    found = Violations(len(cells))
    values = parse_values(
        pa.array(cells, pa.string()), pa.array(currency) if currency else None, spec, found
    ).to_pylist()
    rules = {v.rule: [int(i) for i in v.mask.nonzero()[0]] for v in found.items}
    return values, rules


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("19.99", 1999, id="19.99-is-1999-not-1998"),
        pytest.param("0.3", 30, id="0.1+0.2-as-text"),
        pytest.param("5", 500, id="integer"),
        pytest.param("5.5", 550, id="one-decimal"),
        pytest.param(".5", 50, id="leading-dot"),
        pytest.param("-0.00", 0, id="negative-zero"),
        pytest.param("1e2", 10000, id="exponent-via-decimal"),
        pytest.param("0.10", 10, id="trailing-zero"),
        pytest.param("92233720368547758.07", 2**63 - 1, id="int64-max"),
    ],
)
def test_amounts_scale_exactly(text: str, expected: int) -> None:
    """Text amounts times 100 are exact integers."""
    values, rules = run([text], scale=100)
    assert (values, rules) == ([expected], {})


def test_float_noise_needs_a_rounding_mode() -> None:
    """0.1+0.2 as a float's text (0.30000000000000004) is refused unless rounding is set."""
    text = repr(0.1 + 0.2)
    assert run([text], scale=100) == ([None], {"value-rounding": [0]})
    assert run([text], scale=100, rounding="half_even") == ([30], {})


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("half_even", [2, 2, 4]), ("half_up", [2, 3, 4]), ("down", [1, 2, 3])],
)
def test_rounding_modes(mode: str, expected: list[int]) -> None:
    """Rounding happens only when asked, in the mode asked."""
    values, rules = run(["0.015", "0.025", "0.035"], scale=100, rounding=mode)
    assert (values, rules) == (expected, {})


def test_thousands_separators_and_symbols() -> None:
    """'1,234.56' and '$5.00' parse with the options; wrong grouping is refused."""
    values, rules = run(
        ["1,234.56", "$5.00", "12,34.5", "1,234,567"], scale=100, thousands_separator=",", strip="$"
    )
    assert values == [123456, 500, None, 123456700]
    assert rules == {"value-format": [2]}


def test_european_decimal_comma() -> None:
    """'1.234,56' with '.' grouping and ',' decimals."""
    values, rules = run(["1.234,56"], scale=100, thousands_separator=".", decimal_separator=",")
    assert (values, rules) == ([123456], {})


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        pytest.param("NaN", "value-not-finite", id="nan"),
        pytest.param("inf", "value-not-finite", id="inf"),
        pytest.param("-Infinity", "value-not-finite", id="minus-infinity"),
        pytest.param("99999999999999999999.99", "value-overflow", id="overflow"),
        pytest.param("abc", "value-format", id="text"),
        pytest.param("1_000", "value-format", id="underscore"),
        pytest.param("5.00.1", "value-format", id="two-dots"),
        pytest.param("", "value-missing", id="empty"),
        pytest.param("-5.00", "value-negative", id="negative"),
    ],
)
def test_bad_amounts_are_refused(text: str, rule: str) -> None:
    """Each bad amount breaks exactly its rule."""
    assert run([text], scale=100) == ([None], {rule: [0]})


def test_refunds_when_allowed() -> None:
    """Negative amounts pass with allow_negative."""
    assert run(["-5.00"], scale=100, allow_negative=True) == ([-500], {})


def test_optional_empty_value_is_left_out() -> None:
    """With required = false an empty cell sends no v."""
    assert run([""], scale=100, required=False) == ([None], {})


def test_currency_minor_units() -> None:
    """JPY has 0 decimals, KWD 3, USD 2; an unknown code is refused, never guessed."""
    values, rules = run(
        ["1500", "1.234", "19.99", "19.99", "1.5", "3"],
        ["JPY", "KWD", "usd", "XYZ", "JPY", ""],
        currency_column="currency",
    )
    assert values == [1500, 1234, 1999, None, None, None]
    assert rules == {"currency-unknown": [3, 5], "value-rounding": [4]}


def test_non_power_of_ten_scale_uses_decimal() -> None:
    """A scale such as 60 still multiplies exactly."""
    assert run(["1.5", "0.01"], scale=60) == ([90, None], {"value-rounding": [1]})
