"""Money and other goal values: text to an exact integer, never through float.

A cell's text is scaled by a power of ten with string arithmetic, vectorized with Arrow
(``19.99`` times 100 is ``1999``). Values the fast path cannot take (exponents, NaN, rounding
that the schema allows, scales that are not powers of ten) go through :mod:`decimal`, once
per distinct text.
"""

from __future__ import annotations

import decimal
import re
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from importer.arrow import bools
from importer.currencies import MINOR_UNITS
from importer.rules import Violations
from importer.schema import ValueField

INT64_MAX = 2**63 - 1
_NUMBER = r"^(?P<sign>[+-]?)(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?$"
# What Decimal may read once symbols and separators are gone: ASCII digits, a sign, a point
# and an exponent, or NaN/Infinity (refused as value-not-finite). Decimal alone would also
# read fullwidth or Arabic-Indic digits (U+FF11 U+FF12 as 12) and surrounding whitespace.
_DECIMAL_TEXT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:s?nan[0-9]*|inf(?:inity)?))",
    re.ASCII,
)
_ROUNDING = {
    "half_even": decimal.ROUND_HALF_EVEN,
    "half_up": decimal.ROUND_HALF_UP,
    "down": decimal.ROUND_DOWN,
}


def parse_values(
    text: pa.Array, currency: pa.Array | None, spec: ValueField, found: Violations
) -> pa.Array:
    """Turn amount texts into int64 values, recording rows that break a rule.

    Args:
        text: the amount cells as trimmed strings ("" when empty).
        currency: ISO 4217 codes per row when the schema has ``currency_column``.
        spec: the schema's value options.
        found: where rule breaks are recorded.

    Returns:
        int64 values, null where the row is rejected or the value is absent.
    """
    column = spec.column or "value"
    empty = pc.equal(pc.binary_length(text), 0)
    if spec.required:
        found.add(empty, "value-missing", column, text)
    cleaned = _clean(text, spec, found, column)
    digits = _digits_for_rows(currency, spec, found)
    out = np.zeros(len(text), dtype=np.int64)
    valid = np.zeros(len(text), dtype=bool)
    match = pc.extract_regex(cleaned, _NUMBER)
    plain = pc.and_(pc.is_valid(match), pc.greater(pc.binary_length(cleaned), 0))
    plain = pc.and_(plain, pc.invert(pc.match_substring_regex(cleaned, r"^[+-]?\.?$")))
    plain_np = bools(plain)
    if isinstance(digits, int):
        _fast(match, plain_np, np.full(len(text), digits), out, valid)
    elif isinstance(digits, np.ndarray):
        _fast(match, plain_np, digits, out, valid)
    slow = ~valid & ~bools(empty) & ~bools(pc.is_null(cleaned))
    if slow.any():
        _slow(cleaned, slow, digits, spec, out, valid, found, column, text)
    if not spec.allow_negative:
        negative = valid & (out < 0)
        found.add(negative, "value-negative", column, text)
        valid &= ~negative
    return pa.array(out, mask=~valid)


def _clean(text: pa.Array, spec: ValueField, found: Violations, column: str) -> pa.Array:
    """Remove symbols and thousands separators; null where grouping is wrong."""
    cleaned = text
    for char in spec.strip:
        cleaned = pc.replace_substring(cleaned, char, "")
    if spec.thousands_separator:
        sep = spec.thousands_separator
        has_sep = pc.match_substring(cleaned, sep)
        dec = _regex_escape(spec.decimal_separator)
        grouped = rf"^[+-]?[0-9]{{1,3}}({_regex_escape(sep)}[0-9]{{3}})+({dec}[0-9]*)?$"
        bad_group = pc.and_(has_sep, pc.invert(pc.match_substring_regex(cleaned, grouped)))
        found.add(bad_group, "value-format", column, text)
        cleaned = pc.if_else(bad_group, pa.scalar(None, pa.string()), cleaned)
        cleaned = pc.replace_substring(cleaned, sep, "")
    if spec.decimal_separator != ".":
        cleaned = pc.replace_substring(cleaned, spec.decimal_separator, ".")
    return cleaned


def _regex_escape(char: str) -> str:
    return "\\" + char if not char.isalnum() else char


def _digits_for_rows(
    currency: pa.Array | None, spec: ValueField, found: Violations
) -> int | np.ndarray | None:
    """Decimal places to shift per row: one int, an array per currency, or None (not 10^k)."""
    if currency is None:
        scale = spec.scale or 1
        places = len(str(scale)) - 1
        return places if scale == 10**places else None
    codes = pc.utf8_upper(currency)
    known = pa.array(sorted(MINOR_UNITS))
    index = pc.index_in(codes, value_set=known)
    found.add(pc.is_null(index), "currency-unknown", spec.currency_column or "currency", currency)
    minor = np.array([MINOR_UNITS[c] for c in known.to_pylist()], dtype=np.int64)
    idx = pc.fill_null(index, 0).to_numpy(zero_copy_only=False)
    out: np.ndarray = np.where(bools(pc.is_null(index)), -1, minor[idx])
    return out


def _fast(
    match: pa.Array, plain: np.ndarray, digits: np.ndarray, out: np.ndarray, valid: np.ndarray
) -> None:
    """Exact scaling by 10**digits with string arithmetic, for plain decimal texts."""
    sign = pc.struct_field(match, "sign")
    integer = pc.struct_field(match, "int")
    frac = pc.fill_null(pc.struct_field(match, "frac"), "")
    for places in np.unique(digits[plain & (digits >= 0)]):
        rows = plain & (digits == places)
        k = int(places)
        padded = pc.utf8_rpad(frac, width=k, padding="0") if k else frac
        head = pc.utf8_slice_codeunits(padded, 0, k)
        rest = pc.utf8_slice_codeunits(padded, k) if k else frac
        exact = pc.invert(pc.match_substring_regex(rest, "[1-9]"))
        number = pc.utf8_ltrim(pc.binary_join_element_wise(integer, head, ""), "0")
        fits = pc.less_equal(pc.binary_length(number), 18)
        ok = rows & bools(exact) & bools(fits)
        if not ok.any():
            continue
        text = pc.if_else(pa.array(ok), number, pa.scalar("0"))
        text = pc.if_else(pc.equal(pc.binary_length(text), 0), pa.scalar("0"), text)
        values = pc.cast(text, pa.int64()).to_numpy(zero_copy_only=False)
        negative = bools(pc.equal(sign, "-"))
        out[ok] = np.where(negative, -values, values)[ok]
        valid |= ok


def _slow(
    cleaned: pa.Array,
    rows: np.ndarray,
    digits: int | np.ndarray | None,
    spec: ValueField,
    out: np.ndarray,
    valid: np.ndarray,
    found: Violations,
    column: str,
    raw: pa.Array,
) -> None:
    """Decimal arithmetic, once per distinct (text, places), for what _fast left."""
    texts = cleaned.to_pylist()
    per_row = digits if isinstance(digits, np.ndarray) else None
    rules = {"value-format": [], "value-not-finite": [], "value-rounding": [], "value-overflow": []}  # type: dict[str, list[int]]
    cache: dict[tuple[str, int], tuple[int | None, str | None]] = {}
    for i in np.flatnonzero(rows):
        places = int(per_row[i]) if per_row is not None else -1
        if per_row is not None and places < 0:
            continue  # unknown currency, already recorded
        key = (texts[i], places)
        if key not in cache:
            cache[key] = scale_decimal(texts[i], spec, places)
        value, rule = cache[key]
        if rule is not None:
            rules[rule].append(int(i))
        elif value is not None:
            out[i] = value
            valid[i] = True
    for rule, indexes in rules.items():
        if indexes:
            mask = np.zeros(len(rows), dtype=bool)
            mask[indexes] = True
            found.add(mask, rule, column, raw)


def scale_decimal(text: str, spec: ValueField, places: int = -1) -> tuple[int | None, str | None]:
    """Scale one amount text exactly; returns (value, None) or (None, rule code).

    Args:
        text: the cleaned amount text.
        spec: the schema's value options (scale and rounding).
        places: decimal places from a currency code, or -1 to use ``spec.scale``.
    """
    if not _DECIMAL_TEXT.fullmatch(text):  # not "1_000", " 5", nor fullwidth digits
        return None, "value-format"
    try:
        amount = Decimal(text)
    except decimal.InvalidOperation:
        return None, "value-format"
    if not amount.is_finite():
        return None, "value-not-finite"
    factor = Decimal(10) ** places if places >= 0 else Decimal(spec.scale or 1)
    with decimal.localcontext() as context:
        context.prec = 100
        scaled = amount * factor
        whole = scaled.to_integral_value(rounding=decimal.ROUND_DOWN)
        if scaled != whole:
            if spec.rounding == "refuse":
                return None, "value-rounding"
            whole = scaled.to_integral_value(rounding=_ROUNDING[spec.rounding])
    if abs(whole) > INT64_MAX:
        return None, "value-overflow"
    return int(whole), None
