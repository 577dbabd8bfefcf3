"""Event times: cells to epoch seconds, with explicit units, zones and DST rules.

Epoch numbers carry a unit (given, or decided by magnitude); text is ISO 8601 or a strptime
pattern; times without an offset are placed in the schema's IANA zone, and local times that
do not exist (DST gap) or happen twice (DST fold) are refused unless the schema says how to
resolve them. A missing time is a reject, never "now".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from importer.arrow import bools
from importer.rules import Violations
from importer.schema import Checks, TimeField

_EPOCH = r"^-?[0-9]{1,19}(\.[0-9]+)?$"
_ISO = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]{1,9})?)?"
    r"(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)?)?$"
)
_HAS_OFFSET = r"[T ][0-9]{2}:[0-9]{2}.*(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$"
# Epoch magnitude limits for unit "auto": seconds until year 5138, then ms, us, ns.
_AUTO_LIMITS = ((10**11, 1), (10**14, 1_000), (10**17, 1_000_000))
_UNIT_DIVISOR = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


class _Times:
    """Seconds per row being filled in, with which rows are done and which are naive."""

    def __init__(self, size: int) -> None:
        self.seconds = np.zeros(size, dtype=np.int64)
        self.known = np.zeros(size, dtype=bool)  # an instant in UTC
        self.naive = np.zeros(size, dtype=bool)  # wall time still to place in a zone

    def set(self, rows: np.ndarray, seconds: np.ndarray, *, naive: bool) -> None:
        self.seconds[rows] = seconds
        (self.naive if naive else self.known)[rows] = True


def parse_times(
    cells: pa.Array, spec: TimeField, checks: Checks, now: float, found: Violations
) -> pa.Array:
    """Turn a time column into int64 epoch seconds, recording rows that break a rule.

    Args:
        cells: the column as read (text, numbers or timestamps).
        spec: the schema's time options.
        checks: the schema's limits (oldest, future skew).
        now: the current time in epoch seconds, fixed for the run.
        found: where rule breaks are recorded.

    Returns:
        Epoch seconds, null where the row is rejected.
    """
    times = _Times(len(cells))
    kind = cells.type
    if pa.types.is_dictionary(kind):
        cells = cells.dictionary_decode()
        kind = cells.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        _from_timestamps(cells, times)
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        _from_numbers(cells, spec, times, found)
    else:
        _from_text(cells, spec, times, found)
    missing = bools(pc.is_null(cells))
    if not (pa.types.is_integer(kind) or pa.types.is_timestamp(kind)):
        missing |= bools(pc.equal(pc.binary_length(_as_text(cells)), 0))
    raw = _Raw(cells)
    found.add(missing, "time-missing", spec.column, raw)
    if times.naive.any():
        _localize(times, spec, found, raw)
    _check_window(times, checks, now, found, spec.column, raw)
    return pa.array(times.seconds, mask=~times.known)


def _as_text(cells: pa.Array) -> pa.Array:
    if pa.types.is_string(cells.type) or pa.types.is_large_string(cells.type):
        return pc.utf8_trim_whitespace(pc.fill_null(cells, ""))
    return pc.fill_null(pc.cast(cells, pa.string()), "")


class _Raw:
    """The cells as text for the rejects file, formatted only if some row is rejected."""

    def __init__(self, cells: pa.Array) -> None:
        self.cells = cells
        self._text: pa.Array | None = None

    def __call__(self) -> pa.Array:
        if self._text is None:
            self._text = pc.cast(self.cells, pa.string())
        return self._text


def _from_timestamps(cells: pa.Array, times: _Times) -> None:
    kind = cells.type
    if pa.types.is_date(kind):
        cells = pc.cast(cells, pa.timestamp("s"))
        kind = cells.type
    per_second = _UNIT_DIVISOR[kind.unit]
    ints = pc.fill_null(pc.cast(cells.cast(pa.timestamp(kind.unit)), pa.int64()), 0)
    valid = ~bools(pc.is_null(cells))
    seconds = np.floor_divide(ints.to_numpy(zero_copy_only=False), per_second)
    times.set(np.flatnonzero(valid), seconds[valid], naive=kind.tz is None)


def _from_numbers(cells: pa.Array, spec: TimeField, times: _Times, found: Violations) -> None:
    values = pc.cast(cells, pa.float64()).to_numpy(zero_copy_only=False)
    valid = ~bools(pc.is_null(cells))
    finite = valid & np.isfinite(values)
    found.add(valid & ~finite, "time-format", spec.column, _Raw(cells))
    if pa.types.is_integer(cells.type):
        ints = pc.fill_null(cells, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        _set_epoch(ints, finite, spec, times)
    else:
        floored = np.floor(np.where(finite, values, 0))
        too_big = np.abs(floored) >= 2**62
        found.add(finite & too_big, "time-format", spec.column, _Raw(cells))
        ok = finite & ~too_big
        _set_epoch(np.where(ok, floored, 0).astype(np.int64), ok, spec, times)


def _set_epoch(ints: np.ndarray, rows: np.ndarray, spec: TimeField, times: _Times) -> None:
    if spec.epoch_unit == "auto":
        divisor = np.full(len(ints), 1_000_000_000, dtype=np.int64)
        magnitude = np.abs(ints)
        for limit, unit in reversed(_AUTO_LIMITS):
            divisor[magnitude < limit] = unit
    else:
        divisor = np.full(len(ints), _UNIT_DIVISOR[spec.epoch_unit], dtype=np.int64)
    times.set(np.flatnonzero(rows), np.floor_divide(ints, divisor)[rows], naive=False)


def _from_text(cells: pa.Array, spec: TimeField, times: _Times, found: Violations) -> None:
    text = _as_text(cells)
    present = ~bools(pc.equal(pc.binary_length(text), 0))
    fmt = spec.format
    if "%" in fmt:
        _parse_pattern(text, present, fmt, times, found, spec.column, cells)
        return
    epoch = present & bools(pc.match_substring_regex(text, _EPOCH))
    if fmt == "iso":
        epoch[:] = False
    if fmt == "epoch":
        found.add(present & ~epoch, "time-format", spec.column, cells)
    else:
        _parse_iso(text, present & ~epoch, times, found, spec.column, cells)
    if epoch.any():
        whole = pc.struct_field(pc.extract_regex(text, r"^(?P<n>-?[0-9]+)"), "n")
        ints = pc.cast(pc.if_else(pa.array(epoch), whole, pa.scalar("0")), pa.int64())
        _set_epoch(ints.to_numpy(zero_copy_only=False), epoch, spec, times)


def _parse_pattern(
    text: pa.Array,
    rows: np.ndarray,
    fmt: str,
    times: _Times,
    found: Violations,
    column: str,
    raw: pa.Array,
) -> None:
    """strptime in Arrow; what does not print back the same is checked by Python's strptime.

    Arrow's parser rolls impossible dates over (31/02 becomes 02/03); Python's refuses them.
    """
    parsed = pc.strptime(text, format=fmt, unit="s", error_is_null=True)
    ok = rows & ~bools(pc.is_null(parsed))
    if "%z" not in fmt:
        same = bools(pc.equal(pc.strftime(parsed, format=fmt), text))
        doubt = ok & ~same
        ok &= same
    else:
        doubt = ok.copy()
        ok[:] = False
    ints = pc.cast(pc.fill_null(parsed, pa.scalar(0, parsed.type)), pa.int64())
    times.set(np.flatnonzero(ok), ints.to_numpy(zero_copy_only=False)[ok], naive="%z" not in fmt)
    found.add(rows & ~ok & ~doubt, "time-format", column, raw)
    if doubt.any():
        _parse_each(
            text, doubt, lambda value: _strptime_seconds(value, fmt), times, found, column, raw
        )


def _strptime_seconds(value: str, fmt: str) -> tuple[int, bool] | None:
    """Python's strict strptime: (epoch seconds, naive) or None; naive ones count as if UTC."""
    try:
        parsed = datetime.strptime(value, fmt)
    except ValueError:
        return None
    return _seconds_of(parsed)


def _seconds_of(parsed: datetime) -> tuple[int, bool]:
    naive = parsed.tzinfo is None
    aware = parsed.replace(tzinfo=UTC) if naive else parsed
    return int(aware.timestamp() // 1), naive


def _parse_iso(
    text: pa.Array,
    rows: np.ndarray,
    times: _Times,
    found: Violations,
    column: str,
    raw: pa.Array,
) -> None:
    """ISO 8601 in Arrow where it can, in Python for the rest (once per distinct text)."""
    looks = rows & bools(pc.match_substring_regex(text, _ISO))
    offset = looks & bools(pc.match_substring_regex(text, _HAS_OFFSET))
    for subset, target in (
        (offset, pa.timestamp("ns", tz="UTC")),
        (looks & ~offset, pa.timestamp("ns")),
    ):
        if not subset.any():
            continue
        picked = pc.filter(text, pa.array(subset))
        try:
            ns = pc.cast(pc.cast(picked, target), pa.int64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue  # some value Arrow cannot take: Python below handles the whole subset
        times.set(
            np.flatnonzero(subset), np.floor_divide(ns, 1_000_000_000), naive=target.tz is None
        )
        rows = rows & ~subset
    rest = rows & ~times.known & ~times.naive
    if rest.any():
        _parse_each(text, rest, _iso_seconds, times, found, column, raw)


def _parse_each(
    text: pa.Array,
    rows: np.ndarray,
    parse: Callable[[str], tuple[int, bool] | None],
    times: _Times,
    found: Violations,
    column: str,
    raw: pa.Array,
) -> None:
    """Parse the given rows in Python, once per distinct text; None marks a format error."""
    values = text.to_pylist()
    cache: dict[str, tuple[int, bool] | None] = {}
    bad = np.zeros(len(values), dtype=bool)
    for i in np.flatnonzero(rows):
        value = values[i]
        if value not in cache:
            cache[value] = parse(value)
        result = cache[value]
        if result is None:
            bad[i] = True
        else:
            times.set(np.array([i]), np.array([result[0]]), naive=result[1])
    found.add(bad, "time-format", column, raw)


def _iso_seconds(value: str) -> tuple[int, bool] | None:
    """(epoch seconds, naive) for one ISO 8601 text; naive ones count as if in UTC."""
    try:
        return _seconds_of(datetime.fromisoformat(value))
    except ValueError:
        return None


def _localize(times: _Times, spec: TimeField, found: Violations, raw: _Raw) -> None:
    """Place wall times in the schema's zone; refuse or resolve DST gaps and folds."""
    rows = times.naive
    if spec.timezone is None:
        found.add(rows, "time-no-zone", spec.column, raw)
        times.naive[:] = False
        return
    wall = pa.array(times.seconds[rows], type=pa.timestamp("s"))
    options = {"timezone": spec.timezone}
    early = pc.assume_timezone(wall, ambiguous="earliest", nonexistent="earliest", **options)
    late = pc.assume_timezone(wall, ambiguous="latest", nonexistent="latest", **options)
    early_s = _seconds(early)
    late_s = _seconds(late)
    back = _seconds(pc.local_timestamp(early))
    wall_s = times.seconds[rows]
    differ = early_s != late_s
    fold = differ & (back == wall_s)
    gap = differ & ~fold
    chosen = early_s.copy()
    if spec.on_dst_fold == "latest":
        chosen[fold] = late_s[fold]
    if spec.on_dst_gap == "shift_forward":
        # As if the clocks had not changed yet: 02:30 in a 02:00->03:00 gap is 03:30.
        chosen[gap] = early_s[gap] + (wall_s[gap] - back[gap])
    index = np.flatnonzero(rows)
    rejected = np.zeros(len(rows), dtype=bool)
    if spec.on_dst_fold == "reject":
        rejected[index[fold]] = True
        found.add(_scatter(len(rows), index[fold]), "time-dst-fold", spec.column, raw)
    if spec.on_dst_gap == "reject":
        rejected[index[gap]] = True
        found.add(_scatter(len(rows), index[gap]), "time-dst-gap", spec.column, raw)
    keep = ~rejected[index]
    times.naive[:] = False
    times.set(index[keep], chosen[keep], naive=False)


def _seconds(stamps: pa.Array) -> np.ndarray:
    as_int = pc.cast(stamps.cast(pa.timestamp(stamps.type.unit)), pa.int64())
    values: np.ndarray = as_int.to_numpy(zero_copy_only=False)
    return values


def _scatter(size: int, index: np.ndarray) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[index] = True
    return mask


def _check_window(
    times: _Times, checks: Checks, now: float, found: Violations, column: str, raw: _Raw
) -> None:
    limits = [bound for bound in (_oldest(checks), _max_age(checks, now)) if bound is not None]
    if limits:
        too_old = times.known & (times.seconds < max(limits))
        found.add(too_old, "time-too-old", column, raw)
        times.known &= ~too_old
    future = times.known & (times.seconds > now + checks.max_future_seconds)
    found.add(future, "time-future", column, raw)
    times.known &= ~future


def _oldest(checks: Checks) -> int | None:
    oldest = checks.oldest
    if oldest is None:
        return None
    if not isinstance(oldest, datetime):
        oldest = datetime(oldest.year, oldest.month, oldest.day)
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return int(oldest.timestamp())


def _max_age(checks: Checks, now: float) -> int | None:
    return None if checks.max_age_days is None else int(now) - checks.max_age_days * 86_400


def iso_utc(seconds: int) -> str:
    """Epoch seconds as an ISO 8601 UTC text, for reports."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_of(seconds: int) -> date:
    """The UTC calendar day of an epoch second."""
    return datetime.fromtimestamp(seconds, tz=UTC).date()


def window_bound(value: str | date | datetime | int | None, *, end: bool) -> int | None:
    """A --since/--until bound as epoch seconds (UTC unless the text carries an offset).

    A date alone means that whole day: ``since`` starts at its midnight, ``until`` ends after
    it (so ``--until 2025-03-31`` includes March 31). A datetime is exact; ``until`` is
    exclusive.

    Raises:
        ValueError: the text is neither an ISO date nor an ISO datetime.
    """
    if value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        dated = re.fullmatch(r"(\d{4}-\d{2}-\d{2})(Z|[+-]\d{2}:?\d{2})", text)
        if dated:  # a date in a zone: its midnight there (not 02:00 read as a time of day)
            day, zone = dated.groups()
            zone = "+00:00" if zone == "Z" else zone
            text = f"{day}T00:00:00{zone}"
            if end:
                start = datetime.fromisoformat(text)
                return int(start.timestamp()) + 86_400
        try:
            value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO date or datetime (e.g. 2025-03-01 or "
                "2025-03-01T12:00:00+01:00)"
            ) from None
    if not isinstance(value, datetime):
        start = datetime(value.year, value.month, value.day, tzinfo=UTC)
        return int(start.timestamp()) + (86_400 if end else 0)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())
