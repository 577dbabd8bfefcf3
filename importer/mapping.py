"""A batch of input rows to Event API parameters, URLs and rejects, vectorized.

Each field of the schema is checked over whole Arrow columns; per-row Python runs only for
what cannot be vectorized (hashing, cookies, odd numbers), once per distinct value. A row
that breaks any rule is rejected with every rule it breaks; it never stops the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from importer import encode
from importer.errors import SchemaError
from importer.rules import RULES, Violations
from importer.schema import DigitsField, Filter, Schema, TextField, read_salt
from importer.source import Batch
from importer.times import parse_times
from importer.values import parse_values

_CONTROL = r"[\x00-\x1f\x7f]"
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_VARIATION = r"^[0-9]+(_[0-9]+)*$"
_GOALS = r"^[0-9]+(,[0-9]+)*$"
_KEY_SEPARATOR = "\x1f"
_CELL_START = 60  # characters of a long cell shown in a reject

PARAM_COLUMNS = ("a", "n", "u", "x", "v", "g", "d", "s", "time")
WINDOW_FILTER = "--since/--until"


@dataclass
class Mapped:
    """The outcome of mapping one batch.

    Attributes:
        batch: the batch that was mapped.
        valid: for each read row of the batch, whether it passed every rule.
        events: one row per valid input row: position, file, row, line, the parameters
            (a, n, u, x, v, g, d, s, time) and the request url.
        keys: the dedupe key of each valid row, when the schema has one.
        rejects: one row per broken rule (file, row, line, column, rule, message, value,
            position); a rejected row may appear several times.
        rejected: how many rows of the batch were rejected (malformed ones included).
        filtered: positions of the rows a schema filter left out (settled as filtered).
        filtered_by: rows filtered per filter (its description; ``WINDOW_FILTER`` for the
            time window), each row counted under the first filter that left it out.
        outside_window: rows left out by --since/--until; not settled, so a run with
            another window sends them.
    """

    batch: Batch
    valid: np.ndarray
    events: pa.Table
    keys: list[str] | None
    rejects: pa.Table
    rejected: int
    filtered: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    filtered_by: dict[str, int] = dataclasses.field(default_factory=dict)
    outside_window: int = 0

    @property
    def filtered_count(self) -> int:
        """Rows filtered out of this batch (by the schema's filters and the time window)."""
        return len(self.filtered) + self.outside_window


class Mapper:
    """Maps batches with one schema; constants are checked and encoded once."""

    def __init__(
        self,
        schema: Schema,
        *,
        endpoint: str | None = None,
        now: float | None = None,
        since: int | None = None,
        until: int | None = None,
        origin: str = "schema",
    ) -> None:
        self.schema = schema
        self.endpoint = endpoint or schema.endpoint
        self.now = _time.time() if now is None else now
        self.since, self.until = since, until
        spec = schema.user_id
        self.salt = read_salt(spec.salt_env) if spec.salt_env else ""
        _check_patterns(schema, origin)

    def map(self, batch: Batch) -> Mapped:
        """Filter, validate and encode one batch."""
        whole = batch
        filtered = np.zeros(0, dtype=np.int64)
        filtered_by: dict[str, int] = {}
        if self.schema.filter and batch.data is not None and batch.data.num_rows:
            keep, filtered_by = self._filter(batch.data)
            if not keep.all():
                filtered = batch.positions[~keep]
                batch = _take(batch, keep)
        mapped = self._map(batch)
        mapped.batch, mapped.filtered = whole, filtered
        for label, n in mapped.filtered_by.items():  # the window comes after the filters
            filtered_by[label] = filtered_by.get(label, 0) + n
        mapped.filtered_by = filtered_by
        return mapped

    def _filter(self, data: pa.RecordBatch) -> tuple[np.ndarray, dict[str, int]]:
        """Which rows pass every filter, and how many each filter left out (first one wins)."""
        keep = np.ones(data.num_rows, dtype=bool)
        counts: dict[str, int] = {}
        texts = _Texts(data)
        for spec in self.schema.filter:
            passes = _passes(spec, texts.get(spec.column))
            out = keep & ~passes
            counts[spec.describe()] = int(out.sum())
            keep &= passes
        return keep, counts

    def _map(self, batch: Batch) -> Mapped:
        data = batch.data
        size = 0 if data is None else data.num_rows
        found = Violations(size)
        if data is None or size == 0:
            return self._finish(batch, found, None, {})
        texts = _Texts(data, found)
        params: dict[str, encode.Piece] = {}
        params["a"] = self._digits(self.schema.project_id, texts, found, "project-id-digits")
        params["d"] = self._digits(self.schema.account_id, texts, found, "account-id-digits")
        params["u"] = self._user(texts, found)
        params["n"] = self._text(self.schema.event_name, texts, found, "event-name")
        params["x"], experiment_ids = self._experiments(texts, found)
        params["g"] = (
            experiment_ids if self.schema.kind == "impression" else self._goals(texts, found)
        )
        params["v"] = self._value(texts, found, data)
        params["currency"] = self._currency(texts)
        time_spec = self.schema.time
        times = parse_times(
            texts.get(time_spec.column, time_spec.extract)
            if time_spec.extract
            else data.column(time_spec.column),
            time_spec,
            self.schema.checks,
            self.now,
            found,
        )
        params["time"] = pc.cast(times, pa.string())
        params["s"] = self._segments(texts, found)
        keys = self._keys(texts, found)
        outside = self._outside_window(times, found)
        return self._finish(batch, found, params, keys, outside)

    def _outside_window(self, times: pa.Array, found: Violations) -> np.ndarray | None:
        """Rows whose time is known and outside --since/--until: filtered, not rejected."""
        if self.since is None and self.until is None:
            return None
        seconds = pc.fill_null(times, 0).to_numpy(zero_copy_only=False)
        known = ~_np(pc.is_null(times))
        outside = np.zeros(len(seconds), dtype=bool)
        if self.since is not None:
            outside |= seconds < self.since
        if self.until is not None:
            outside |= seconds >= self.until
        outside &= known
        if outside.any():
            for item in found.items:
                item.mask &= ~outside
            found.items = [item for item in found.items if item.mask.any()]
        return outside

    # -- fields -------------------------------------------------------------------------

    def _digits(
        self, spec: DigitsField, texts: _Texts, found: Violations, rule: str
    ) -> encode.Piece:
        if spec.value is not None:
            return spec.value
        assert spec.column is not None
        cells = texts.get(spec.column, spec.extract)
        found.add(pc.invert(pc.ascii_is_decimal(cells)), rule, spec.column, cells)
        return cells

    def _text(self, spec: TextField, texts: _Texts, found: Violations, prefix: str) -> encode.Piece:
        if spec.value is not None:
            return spec.value
        assert spec.column is not None
        cells = texts.get(spec.column, spec.extract)
        found.add(pc.equal(pc.binary_length(cells), 0), f"{prefix}-empty", spec.column, cells)
        found.add(
            pc.match_substring_regex(cells, _CONTROL), f"{prefix}-control", spec.column, cells
        )
        return cells

    def _user(self, texts: _Texts, found: Violations) -> encode.Piece:
        spec = self.schema.user_id
        cells = self._text(spec, texts, found, "user-id")
        if spec.hash == "none" and not spec.allow_email:
            column = spec.column or "user_id"
            if not isinstance(cells, str) and pc.any(pc.match_substring(cells, "@")).as_py():
                found.add(pc.match_substring_regex(cells, _EMAIL), "user-id-email", column, cells)
        cells = _normalize(cells, spec.normalize, hashed=spec.hash == "sha256")
        if spec.hash == "sha256":
            return _hash_ids(cells, self.salt)
        return cells

    def _experiments(self, texts: _Texts, found: Violations) -> tuple[pa.Array, pa.Array]:
        """x fragments ("x1=2&x3=4") and experiment ids ("1,3") per row."""
        fragments: list[encode.Piece] = []
        ids: list[encode.Piece] = []
        size = found.size
        flagged = np.zeros(size, dtype=bool)  # rows already rejected as experiment-missing
        for pair in self.schema.experiments:
            exp = (
                pair.experiment
                if pair.experiment is not None
                else texts.get(pair.experiment_column, pair.experiment_extract)
            )
            var = (
                pair.variation
                if pair.variation is not None
                else texts.get(pair.variation_column, pair.variation_extract)
            )
            exp_arr = _broadcast(exp, size)
            var_arr = _broadcast(var, size)
            exp_empty = _np(pc.equal(pc.binary_length(exp_arr), 0))
            var_empty = _np(pc.equal(pc.binary_length(var_arr), 0))
            absent = exp_empty & var_empty
            half = exp_empty ^ var_empty
            column = pair.experiment_column or pair.variation_column or "experiments"
            missing = half | (absent & pair.required)
            found.add(missing, "experiment-missing", column, exp_arr)
            flagged |= missing
            present = ~exp_empty & ~var_empty
            bad_exp = present & ~_np(pc.ascii_is_decimal(exp_arr))
            bad_var = present & ~_np(pc.match_substring_regex(var_arr, _VARIATION))
            found.add(
                bad_exp, "experiment-id-digits", pair.experiment_column or "experiment", exp_arr
            )
            found.add(bad_var, "variation-id-format", pair.variation_column or "variation", var_arr)
            keep = pa.array(present)
            fragments.append(
                pc.if_else(
                    keep,
                    pc.binary_join_element_wise("x", exp_arr, "=", var_arr, ""),
                    pa.scalar(None, pa.string()),
                )
            )
            ids.append(pc.if_else(keep, exp_arr, pa.scalar(None, pa.string())))
        if self.schema.buckets is not None:
            frag, exp_ids, bad = self._buckets(texts, found)
            flagged |= bad
            fragments.append(frag)
            ids.append(exp_ids)
        x = encode.join_present(fragments, "&", size)
        joined_ids = encode.join_present(ids, ",", size)
        if len(ids) > 1:
            twice = _np(_per_distinct(joined_ids, _repeats_an_id))
            found.add(twice, "experiment-duplicate", self._experiment_column(), joined_ids)
        none = _np(pc.equal(pc.binary_length(x), 0)) & ~flagged
        found.add(none, "experiment-missing", self._experiment_column(), x)
        return x, joined_ids

    def _experiment_column(self) -> str:
        if self.schema.experiments:
            first = self.schema.experiments[0]
            return first.experiment_column or first.variation_column or "experiments"
        assert self.schema.buckets is not None
        return self.schema.buckets.column

    def _buckets(self, texts: _Texts, found: Violations) -> tuple[pa.Array, pa.Array, np.ndarray]:
        spec = self.schema.buckets
        assert spec is not None
        cells = texts.get(spec.column, spec.extract)
        encoded = cells.dictionary_encode()
        parsed = [_parse_buckets(v, spec.format) for v in encoded.dictionary.to_pylist()]
        frags = pa.array([p[0] if p else None for p in parsed], pa.string()).take(encoded.indices)
        exp_ids = pa.array([p[1] if p else None for p in parsed], pa.string()).take(encoded.indices)
        bad = pc.and_(pc.is_null(frags), pc.greater(pc.binary_length(cells), 0))
        found.add(bad, "buckets-invalid", spec.column, lambda: start_of(cells))
        empty = pc.equal(pc.binary_length(frags), 0)
        none = pa.scalar(None, pa.string())
        return pc.if_else(empty, none, frags), pc.if_else(empty, none, exp_ids), _np(bad)

    def _goals(self, texts: _Texts, found: Violations) -> encode.Piece:
        spec = self.schema.goal_ids
        if spec is None:
            return None
        if spec.value is not None:
            return spec.value
        assert spec.column is not None
        written = texts.get(spec.column, spec.extract)
        cells = pc.replace_substring(written, " ", "")
        empty = pc.equal(pc.binary_length(cells), 0)
        if spec.required:
            found.add(empty, "goal-ids-missing", spec.column, written)
        bad = pc.and_(pc.invert(empty), pc.invert(pc.match_substring_regex(cells, _GOALS)))
        found.add(bad, "goal-ids-format", spec.column, written)
        return pc.if_else(empty, pa.scalar(None, pa.string()), cells)

    def _value(self, texts: _Texts, found: Violations, data: pa.RecordBatch) -> encode.Piece:
        spec = self.schema.value
        if spec is None:
            return None
        if spec.value is not None:
            return str(spec.value)
        assert spec.column is not None
        currency = (
            texts.get(spec.currency_column, spec.currency_extract) if spec.currency_column else None
        )
        values = parse_values(texts.get(spec.column, spec.extract), currency, spec, found)
        return pc.cast(values, pa.string())

    def _currency(self, texts: _Texts) -> encode.Piece:
        """Each row's ISO 4217 code (upper case), for totals per currency; None without one."""
        spec = self.schema.value
        if spec is None or spec.currency_column is None:
            return None
        return pc.utf8_upper(texts.get(spec.currency_column, spec.currency_extract))

    def _segments(self, texts: _Texts, found: Violations) -> encode.Piece:
        pieces: list[pa.Array | str] = []
        for segment in self.schema.segments:
            if segment.value is not None:
                pieces.append(f"s{segment.id}={encode.quote(segment.value)}")
                continue
            assert segment.column is not None
            cells = texts.get(segment.column, segment.extract)
            empty = pc.equal(pc.binary_length(cells), 0)
            if segment.required:
                found.add(empty, "segment-missing", segment.column, cells)
            found.add(
                pc.match_substring_regex(cells, _CONTROL), "segment-control", segment.column, cells
            )
            value = pc.if_else(empty, pa.scalar(None, pa.string()), encode.quote_array(cells))
            pieces.append(pc.binary_join_element_wise(f"s{segment.id}=", value, ""))
        if not pieces:
            return None
        if all(isinstance(p, str) for p in pieces):
            return "&".join(str(p) for p in pieces)
        joined = encode.join_present(pieces, "&", found.size)
        return pc.if_else(
            pc.equal(pc.binary_length(joined), 0), pa.scalar(None, pa.string()), joined
        )

    def _keys(self, texts: _Texts, found: Violations) -> pa.Array | None:
        if not self.schema.dedupe_key:
            return None
        cells = [texts.get(column) for column in self.schema.dedupe_key]
        for column, values in zip(self.schema.dedupe_key, cells, strict=True):
            found.add(pc.equal(pc.binary_length(values), 0), "dedupe-key-empty", column, values)
        return pc.binary_join_element_wise(*cells, _KEY_SEPARATOR)

    # -- output -------------------------------------------------------------------------

    def _finish(
        self,
        batch: Batch,
        found: Violations,
        params: dict[str, encode.Piece] | None,
        keys: pa.Array | None,
        outside: np.ndarray | None = None,
    ) -> Mapped:
        size = found.size
        valid = ~found.bad()
        if outside is not None:
            valid &= ~outside
        events = empty_events()
        key_list: list[str] | None = None
        if params is not None and valid.any():
            events, lengths = self._events(batch, valid, params)
            limit = self.schema.checks.max_url_bytes
            too_long = lengths > limit
            if too_long.any():
                long_rows = np.flatnonzero(valid)[too_long]
                mask = np.zeros(size, dtype=bool)
                mask[long_rows] = True
                said = np.full(size, None, dtype=object)
                said[long_rows] = [f"{n:,} bytes (limit {limit:,})" for n in lengths[too_long]]
                found.add(mask, "url-too-long", "", pa.array(said, pa.string()))
                valid[long_rows] = False
                events = events.filter(pa.array(~too_long))
            if keys is not None:
                key_list = keys.filter(pa.array(valid)).to_pylist()
        elif keys is not None:
            key_list = []
        rejects = _rejects(batch, found)
        left_out = int(outside.sum()) if outside is not None else 0
        return Mapped(
            batch,
            valid,
            events,
            key_list,
            rejects,
            int((~valid).sum()) - left_out + len(batch.malformed),
            filtered_by={WINDOW_FILTER: left_out} if left_out else {},
            outside_window=left_out,
        )

    def _events(
        self, batch: Batch, valid: np.ndarray, params: dict[str, encode.Piece]
    ) -> tuple[pa.Table, np.ndarray]:
        """The events of the valid rows, and the byte length of each one's URL."""
        keep = pa.array(valid)
        count = int(valid.sum())
        picked = {
            name: (value if value is None or isinstance(value, str) else pc.filter(value, keep))
            for name, value in params.items()
        }
        n, u = _quoted(picked["n"]), _quoted(picked["u"])
        pieces = encode.url_pieces(self.endpoint, picked["a"])
        pieces += [
            "a=",
            picked["a"],
            "&n=",
            n,
            "&u=",
            u,
            "&",
            picked["x"],
            encode.optional("&v=", picked["v"]),
            encode.optional("&g=", picked["g"]),
            "&d=",
            picked["d"],
            encode.optional("&", picked["s"]),
            "&time=",
            picked["time"],
        ]
        url = encode.concat(pieces, count)
        lengths = encode.lengths(url)
        lines = batch.lines[valid] if batch.lines is not None else None
        columns: dict[str, pa.Array] = {
            "position": pa.array(batch.positions[valid]),
            "file": pa.repeat(pa.scalar(batch.file), count),
            "row": pa.array(batch.rows[valid]),
            "line": pa.array(lines, pa.int64())
            if lines is not None
            else pa.nulls(count, pa.int64()),
        }
        for name in PARAM_COLUMNS:
            columns[name] = _column(
                picked[name], count, pa.int64() if name in ("v", "time") else pa.string()
            )
        columns["currency"] = _column(picked["currency"], count, pa.string())
        columns["url"] = url
        return pa.table(columns), lengths


class _Texts:
    """Columns of a batch as trimmed text ("" for null), converted once each.

    With an ``extract`` pattern, the text is what its group matched in each cell; a
    non-empty cell that does not match is recorded as ``extract-no-match``.
    """

    def __init__(self, data: pa.RecordBatch, found: Violations | None = None) -> None:
        self.data = data
        self.found = found
        self.cache: dict[tuple[str, str | None], pa.Array] = {}

    def get(self, column: str | None, extract: str | None = None) -> pa.Array:
        assert column is not None
        if (column, extract) not in self.cache:
            if extract is None:
                self.cache[column, None] = as_text(self.data.column(column))
            else:
                self.cache[column, extract] = self._extract(column, extract)
        return self.cache[column, extract]

    def _extract(self, column: str, pattern: str) -> pa.Array:
        cells = self.get(column)
        hit = pc.match_substring_regex(cells, pattern)
        # Group 1 of the first match anywhere; the surrounding text may span lines.
        picked = pc.replace_substring_regex(
            cells, f"^(?s:.)*?(?:{pattern})(?s:.)*$", r"\1", max_replacements=1
        )
        empty = pc.equal(pc.binary_length(cells), 0)
        if self.found is not None:
            missed = pc.and_(pc.invert(hit), pc.invert(empty))
            self.found.add(missed, "extract-no-match", column, lambda: start_of(cells))
        return pc.utf8_trim_whitespace(pc.if_else(hit, picked, ""))


def start_of(cells: pa.Array, length: int = _CELL_START) -> pa.Array:
    """The first characters of each cell, with '…' where it was cut (for reject messages)."""
    cut = pc.greater(pc.utf8_length(cells), length)
    head = pc.utf8_slice_codeunits(cells, 0, length)
    return pc.if_else(cut, pc.binary_join_element_wise(head, "…", ""), cells)


def _passes(spec: Filter, cells: pa.Array) -> np.ndarray:
    """Whether each (trimmed) cell passes one filter."""
    if spec.empty is not None:
        empty = _np(pc.equal(pc.binary_length(cells), 0))
        return empty if spec.empty else ~empty
    if spec.matches is not None:
        pattern = f"^(?:{spec.matches})$"
        return _np(pc.match_substring_regex(cells, pattern, ignore_case=spec.ignore_case))
    wanted = spec.in_ if spec.in_ is not None else spec.not_in
    assert wanted is not None
    if spec.ignore_case:
        cells, wanted = pc.utf8_lower(cells), tuple(w.lower() for w in wanted)
    member = _np(pc.is_in(cells, value_set=pa.array([w.strip() for w in wanted], pa.string())))
    return member if spec.in_ is not None else ~member


def _take(batch: Batch, keep: np.ndarray) -> Batch:
    """The rows of a batch where ``keep`` is true (malformed and skipped rows stay)."""
    assert batch.data is not None
    return dataclasses.replace(
        batch,
        data=batch.data.filter(pa.array(keep)),
        positions=batch.positions[keep],
        rows=batch.rows[keep],
        lines=batch.lines[keep] if batch.lines is not None else None,
    )


def _normalize(cells: encode.Piece, how: str, *, hashed: bool) -> encode.Piece:
    """User ids before hashing: 'email' lower-cases all, 'auto' (hashed) the email-like ones.

    Cells are trimmed already (every cell is), so 'trim' changes nothing more.
    """
    if cells is None or how == "trim" or (how == "auto" and not hashed):
        return cells
    if isinstance(cells, str):
        looks = how == "email" or "@" in cells
        return cells.lower() if looks else cells
    lowered = pc.utf8_lower(cells)
    if how == "email":
        return lowered
    return pc.if_else(pc.match_substring_regex(cells, _EMAIL), lowered, cells)


def _check_patterns(schema: Schema, origin: str) -> None:
    """Refuse regular expressions Arrow's engine (RE2) cannot run, before reading a row."""
    probe = pa.array([""], pa.string())
    patterns = [("filter", f.matches) for f in schema.filter]
    for name, spec in (
        ("user_id", schema.user_id),
        ("event_name", schema.event_name),
        ("project_id", schema.project_id),
        ("account_id", schema.account_id),
        ("goal_ids", schema.goal_ids),
        ("value", schema.value),
        ("time", schema.time),
        ("buckets", schema.buckets),
    ):
        patterns.append((f"{name}.extract", getattr(spec, "extract", None)))
    if schema.value is not None:
        patterns.append(("value.currency_extract", schema.value.currency_extract))
    for i, pair in enumerate(schema.experiments):
        patterns.append((f"experiments[{i}].experiment_extract", pair.experiment_extract))
        patterns.append((f"experiments[{i}].variation_extract", pair.variation_extract))
    for i, segment in enumerate(schema.segments):
        patterns.append((f"segments[{i}].extract", segment.extract))
    for key, pattern in patterns:
        if pattern is None:
            continue
        try:
            pc.match_substring_regex(probe, pattern)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(
                f"{pattern!r} is a regular expression the engine (RE2) cannot run: {exc}. "
                "Lookarounds and backreferences are not supported.",
                origin=origin,
                key=key,
            ) from None


def as_text(cells: pa.Array) -> pa.Array:
    """Any Arrow column as trimmed UTF-8 text, with "" for nulls. Integers keep every digit."""
    if isinstance(cells, pa.ChunkedArray):
        cells = cells.combine_chunks()
    if pa.types.is_dictionary(cells.type):
        cells = cells.dictionary_decode()
    if not pa.types.is_string(cells.type):  # large_string, numbers, ...: one cast
        cells = pc.cast(cells, pa.string())
    return pc.utf8_trim_whitespace(pc.fill_null(cells, ""))


def _np(array: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _broadcast(value: pa.Array | str, size: int) -> pa.Array:
    return pa.repeat(pa.scalar(value), size) if isinstance(value, str) else value


def _quoted(piece: encode.Piece) -> encode.Piece:
    if piece is None:
        return None
    if isinstance(piece, str):
        return encode.quote(piece)
    return encode.quote_array(piece)


def _column(piece: encode.Piece, count: int, kind: pa.DataType) -> pa.Array:
    if piece is None:
        return pa.nulls(count, kind)
    if isinstance(piece, str):
        return pa.repeat(pa.scalar(piece), count).cast(kind)
    return piece.cast(kind)


def _hash_ids(cells: encode.Piece, salt: str) -> encode.Piece:
    if isinstance(cells, str):
        return hashlib.sha256((salt + cells).encode()).hexdigest()
    assert cells is not None
    encoded = cells.dictionary_encode()
    hashed = [
        hashlib.sha256((salt + v).encode()).hexdigest() if v else ""
        for v in encoded.dictionary.to_pylist()
    ]
    return pa.array(hashed, pa.string()).take(encoded.indices)


def _per_distinct(cells: pa.Array, check: Callable[[str], bool]) -> pa.Array:
    """A boolean per row from a Python check run once per distinct value."""
    encoded = cells.dictionary_encode()
    results = pa.array([check(v) for v in encoded.dictionary.to_pylist()], pa.bool_())
    return results.take(encoded.indices)


def _repeats_an_id(ids: str) -> bool:
    parts = ids.split(",")
    return len(parts) != len(set(parts))


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object hook that refuses repeated keys (json keeps the last one silently)."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("repeated key")
    return result


def _parse_buckets(text: str, fmt: str) -> tuple[str, str] | None:
    """An optimizelyBuckets value to ("x1=2&x3=4", "1,3"); ("", "") when empty; None if bad."""
    if not text:
        return "", ""
    try:
        data = json.loads(unquote(text) if fmt == "cookie" else text, object_pairs_hook=_no_repeats)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    fragments, ids = [], []
    for experiment, variation in data.items():
        exp, var = str(experiment), str(variation)
        if isinstance(variation, bool | float) or not exp.isascii() or not exp.isdigit():
            return None
        if not all(part.isascii() and part.isdigit() for part in var.split("_")):
            return None
        fragments.append(f"x{exp}={var}")
        ids.append(exp)
    return "&".join(fragments), ",".join(ids)


def empty_events() -> pa.Table:
    """An events table with no rows."""
    fields = [
        ("position", pa.int64()),
        ("file", pa.string()),
        ("row", pa.int64()),
        ("line", pa.int64()),
    ]
    fields += [
        (name, pa.int64() if name in ("v", "time") else pa.string()) for name in PARAM_COLUMNS
    ]
    fields += [("currency", pa.string()), ("url", pa.string())]
    return pa.schema(fields).empty_table()


def _rejects(batch: Batch, found: Violations) -> pa.Table:
    parts: list[pa.Table] = []
    for item in found.items:
        index = np.flatnonzero(item.mask)
        raw = (
            item.raw.take(pa.array(index))
            if item.raw is not None
            else pa.nulls(len(index), pa.string())
        )
        parts.append(
            pa.table(
                {
                    "file": pa.array([batch.file] * len(index), pa.string()),
                    "row": pa.array(batch.rows[index]),
                    "line": pa.array(
                        batch.lines[index] if batch.lines is not None else [None] * len(index),
                        pa.int64(),
                    ),
                    "column": pa.array([item.column] * len(index), pa.string()),
                    "rule": pa.array([item.rule] * len(index), pa.string()),
                    "message": pa.array([RULES[item.rule]] * len(index), pa.string()),
                    "value": pc.cast(raw, pa.string()),
                    "position": pa.array(batch.positions[index]),
                }
            )
        )
    if batch.malformed:
        parts.append(
            pa.table(
                {
                    "file": pa.array([batch.file] * len(batch.malformed), pa.string()),
                    "row": pa.array([m.row for m in batch.malformed], pa.int64()),
                    "line": pa.array([m.line for m in batch.malformed], pa.int64()),
                    "column": pa.array([""] * len(batch.malformed), pa.string()),
                    "rule": pa.array(["csv-malformed"] * len(batch.malformed), pa.string()),
                    "message": pa.array(
                        [f"{RULES['csv-malformed']} ({m.message})" for m in batch.malformed],
                        pa.string(),
                    ),
                    "value": pa.array([m.text for m in batch.malformed], pa.string()),
                    "position": pa.array([m.position for m in batch.malformed], pa.int64()),
                }
            )
        )
    if not parts:
        return empty_rejects()
    return pa.concat_tables(parts).sort_by([("position", "ascending")])


def empty_rejects() -> pa.Table:
    """A rejects table with no rows."""
    return pa.schema(
        [
            ("file", pa.string()),
            ("row", pa.int64()),
            ("line", pa.int64()),
            ("column", pa.string()),
            ("rule", pa.string()),
            ("message", pa.string()),
            ("value", pa.string()),
            ("position", pa.int64()),
        ]
    ).empty_table()
