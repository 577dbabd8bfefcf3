"""A batch of input rows to Event API parameters, URLs and rejects, vectorized.

Each field of the schema is checked over whole Arrow columns; per-row Python runs only for
what cannot be vectorized (hashing, cookies, odd numbers), once per distinct value. A row
that breaks any rule is rejected with every rule it breaks; it never stops the run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import sys
import time as _time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from importer import encode
from importer.arrow import bools
from importer.datafile import Datafile, Flat, Lookup, flatten, resolve
from importer.errors import SchemaError
from importer.preflight import MAX_HOST_BYTES, MAX_LABEL_BYTES, PLACEHOLDER
from importer.rules import RULES, WARNINGS, Tally, Violation, Violations
from importer.schema import (
    DigitsField,
    ExperimentPair,
    Filter,
    Schema,
    TextField,
    read_salt,
)
from importer.source import Batch
from importer.tables import EVENTS_SCHEMA, empty_events, empty_rejects
from importer.times import parse_times
from importer.values import parse_values

# Text fields (user id, event name, segment values) refuse characters of these Unicode
# categories: controls, format (zero-width, BOM, soft hyphen, bidi marks), line and paragraph
# separators, surrogates, private use and unassigned. A cell must also have something
# visible: a letter, number, punctuation or symbol (not one of the blank letters below).
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
VISIBLE_CATEGORIES = frozenset("LNPS")  # major classes
_BLANK_LETTERS = "\u115f\u1160\u3164\uffa0\u2800"  # Hangul fillers, Braille blank
_ASCII_FORBIDDEN = r"[\x00-\x1f\x7f]"
_ASCII_VISIBLE = r"[!-~]"
# The first byte of every form of @ that EMAIL knows (non-ASCII bytes are looked at too). A
# column of plain ASCII ids without them is cleared by a pass over its bytes, no regex.
_EMAIL_BYTES = b"@%&([{<"

# An email address anywhere in a cell, as people and systems write it: a local part (its last
# character), an @ (also fullwidth U+FF20, small U+FE6B, %40 however often encoded, an HTML
# entity, "(at)" or "[at]"), then a domain of at least two labels (dots may be fullwidth,
# ideographic, %2E or "(dot)"), or a [literal]. Spaces and invisible characters around the @
# are allowed: "eve\t@example.com" is an email too.
_GAP = (
    r"[\t\n\v\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200F}\x{2028}-\x{202F}"
    r"\x{205F}-\x{2064}\x{3000}\x{FEFF}]*"
)
_AT = (
    r"(?:[@\x{FF20}\x{FE6B}]|(?i:%(?:25)*40|&#0*64;|&#x0*40;|&commat;)"
    rf"|(?i:[(\[{{<]{_GAP}at{_GAP}[)\]}}>]))"
)
_LOCAL_END = r"[^\t\n\v\f\r @\x{FF20}\x{FE6B}<>()\[\]{},;:]"
_LABEL = r"[\p{L}\p{N}][\p{L}\p{N}\p{M}_-]*"
_DOT = (
    r"(?:[.\x{FF0E}\x{3002}\x{FF61}]|(?i:%2e)"
    rf"|{_GAP}(?i:[(\[{{<]{_GAP}dot{_GAP}[)\]}}>]){_GAP})"
)
_TLD = r"\p{L}[\p{L}\p{N}\p{M}-]*"
_DOMAIN = rf"(?:{_LABEL}(?:{_DOT}{_LABEL})*{_DOT}{_TLD}|\[[0-9A-Fa-f:.]+\])"
_AT_SIGN = rf"{_LOCAL_END}{_GAP}{_AT}{_GAP}"
EMAIL = _AT_SIGN + _DOMAIN
# What a masked email keeps of its domain when no whole domain follows the @.
_DOMAIN_RUN = r"[^\t\n\v\f\r <>\"'(),;:\[\]{}@\x{FF20}\x{FE6B}]*"
_VARIATION = r"^[0-9]+(_[0-9]+)*$"
_GOALS = r"^[0-9]+(,[0-9]+)*$"
_KEY_SEPARATOR = "\x1f"
_CELL_START = 60  # characters of a long cell shown in a reject

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
        warnings: one row per warning (rules.WARNINGS) of a valid row, laid out as
            ``rejects``: the row is sent all the same.
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
    warnings: pa.Table = dataclasses.field(default_factory=empty_rejects)

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
        datafile: Datafile | None = None,
    ) -> None:
        self.schema = schema
        self.datafile = datafile
        # With a datafile, ids are joined against its lookup tables; keys are resolved.
        self.lookup: Lookup | None = datafile.lookup if datafile is not None else None
        self.resolved = resolve(schema, datafile, origin)
        self.warned = Tally()  # the run's warnings, counted as batches are handed out
        self.endpoint = endpoint or schema.endpoint
        self.now = _time.time() if now is None else now
        self.since, self.until = since, until
        spec = schema.user_id
        self.salt = read_salt(spec.salt_env) if spec.salt_env else ""
        # Rejected user ids that look like emails are masked in every output, unless the
        # user said emails are fine to see (allow_email).
        self.masked = {spec.column} if spec.column and not spec.allow_email else set()
        self.project_limit = project_id_limit(self.endpoint)
        _check_patterns(schema, origin)
        _check_project_constant(schema, self.endpoint, self.project_limit, origin)

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
        self._project_length(params["a"], found)
        params["d"] = self._digits(self.schema.account_id, texts, found, "account-id-digits")
        self._owner(params["a"], params["d"], found)
        params["u"] = self._user(texts, found)
        params["n"] = self._text(self.schema.event_name, texts, found, "event-name")
        params["x"], experiment_ids, assigned = self._experiments(texts, found)
        params["g"] = (
            experiment_ids
            if self.schema.kind == "impression"
            else self._goals(texts, found, assigned)
        )
        params["v"] = self._value(texts, found)
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
        known = ~bools(pc.is_null(times))
        outside = np.zeros(len(seconds), dtype=bool)
        if self.since is not None:
            outside |= seconds < self.since
        if self.until is not None:
            outside |= seconds >= self.until
        outside &= known
        if outside.any():
            found.exclude(outside)
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

    def _project_length(self, cells: encode.Piece, found: Violations) -> None:
        """Project ids too long for the endpoint's host name (a label, or the whole name)."""
        limit = self.project_limit
        if limit is None or not isinstance(cells, pa.Array):
            return
        long = bools(pc.greater(pc.binary_length(cells), limit))
        if long.any():
            long &= bools(pc.ascii_is_decimal(cells))  # others are project-id-digits already
            column = self.schema.project_id.column or "project_id"
            found.add(long, "project-id-length", column, lambda: start_of(cells))

    def _text(self, spec: TextField, texts: _Texts, found: Violations, prefix: str) -> encode.Piece:
        if spec.value is not None:
            return spec.value
        assert spec.column is not None
        cells = texts.get(spec.column, spec.extract)
        forbidden, blank = characters(cells)
        found.add(blank, f"{prefix}-empty", spec.column, cells)
        found.add(forbidden, f"{prefix}-control", spec.column, cells)
        return cells

    def _user(self, texts: _Texts, found: Violations) -> encode.Piece:
        spec = self.schema.user_id
        cells = self._text(spec, texts, found, "user-id")
        if spec.hash == "none" and not spec.allow_email and isinstance(cells, pa.Array):
            found.add(looks_like_email(cells), "user-id-email", spec.column or "user_id", cells)
        cells = _normalize(cells, spec.normalize, hashed=spec.hash == "sha256")
        if spec.hash == "sha256":
            return _hash_ids(cells, self.salt)
        return cells

    def _owner(self, project: encode.Piece, account: encode.Piece, found: Violations) -> None:
        """With a datafile: project and account ids from columns must be its own (constants
        were checked when the mapper was made)."""
        if self.datafile is None:
            return
        for cells, spec, want, rule in (
            (project, self.schema.project_id, self.datafile.project_id, "project-mismatch"),
            (account, self.schema.account_id, self.datafile.account_id, "account-mismatch"),
        ):
            if isinstance(cells, pa.Array) and spec.column is not None:
                other = pc.and_(pc.ascii_is_decimal(cells), pc.not_equal(cells, want))
                found.add(other, rule, spec.column, cells)

    def _experiments(self, texts: _Texts, found: Violations) -> tuple[pa.Array, pa.Array, Flat]:
        """x fragments ("x1=2&x3=4") and experiment ids ("1,3") per row; with a datafile,
        also each row's known experiments (their lookup indices)."""
        fragments: list[encode.Piece] = []
        ids: list[encode.Piece] = []
        assigned: list[Flat] = []
        size = found.size
        flagged = np.zeros(size, dtype=bool)  # rows already rejected as experiment-missing
        for pair in self.schema.experiments:
            fragment, exp_ids, missing, known = self._pair(pair, texts, found)
            flagged |= missing
            fragments.append(fragment)
            ids.append(exp_ids)
            assigned.append(known)
        if self.schema.buckets is not None:
            frag, exp_ids, bad, known = self._buckets(texts, found)
            flagged |= bad
            fragments.append(frag)
            ids.append(exp_ids)
            assigned.append(known)
        x = encode.join_present(fragments, "&", size)
        joined_ids = encode.join_present(ids, ",", size)
        if len(ids) > 1:
            twice = bools(_per_distinct(joined_ids, _repeats_an_id))
            found.add(twice, "experiment-duplicate", self._experiment_column(), joined_ids)
        none = bools(pc.equal(pc.binary_length(x), 0)) & ~flagged
        found.add(none, "experiment-missing", self._experiment_column(), x)
        return x, joined_ids, Flat.concat(assigned)

    def _pair(
        self, pair: ExperimentPair, texts: _Texts, found: Violations
    ) -> tuple[pa.Array, pa.Array, np.ndarray, Flat]:
        """One experiment/variation pair: its x fragment and experiment id per row (null
        where absent), the rows rejected for it already (experiment-missing, keys the
        datafile does not have), and the known experiments."""
        size = found.size
        exp_column, var_column = pair.experiment_source, pair.variation_source
        exp = (
            pair.experiment
            if pair.experiment is not None
            else texts.get(exp_column, pair.experiment_extract)
        )
        var = (
            pair.variation
            if pair.variation is not None
            else texts.get(var_column, pair.variation_extract)
        )
        exp_arr = _broadcast(exp, size)
        var_arr = _broadcast(var, size)
        exp_empty = bools(pc.equal(pc.binary_length(exp_arr), 0))
        var_empty = bools(pc.equal(pc.binary_length(var_arr), 0))
        absent = exp_empty & var_empty
        half = exp_empty ^ var_empty
        column = exp_column or var_column or "experiments"
        missing = half | (absent & pair.required)
        found.add(missing, "experiment-missing", column, exp_arr)
        present = ~exp_empty & ~var_empty
        exp_ok, var_ok = present, present
        if pair.experiment_key_column is None:
            exp_ok = present & bools(pc.ascii_is_decimal(exp_arr))
            label = exp_column or "experiment"
            found.add(present & ~exp_ok, "experiment-id-digits", label, exp_arr)
        if pair.variation_key_column is None:
            var_ok = present & bools(pc.match_substring_regex(var_arr, _VARIATION))
            label = var_column or "variation"
            found.add(present & ~var_ok, "variation-id-format", label, var_arr)
        exp_ids, var_ids, known = exp_arr, var_arr, Flat.concat([])
        if self.lookup is not None:
            exp_ids, var_ids, index = self._judge_pair(
                pair, exp_arr, var_arr, exp_ok, var_ok, found
            )
            rows = np.flatnonzero(index >= 0)
            known = Flat(rows, index[rows])
        keep = pa.array(present)
        if self.lookup is not None:  # keys that did not resolve are null
            keep = pc.and_(keep, pc.and_(pc.is_valid(exp_ids), pc.is_valid(var_ids)))
        none = pa.scalar(None, pa.string())
        joined = pc.binary_join_element_wise("x", exp_ids, "=", var_ids, "")
        fragment = pc.if_else(keep, joined, none)
        flagged = missing | (present & ~bools(keep))  # keys that did not resolve: rejected
        return fragment, pc.if_else(keep, exp_ids, none), flagged, known

    def _judge_pair(
        self,
        pair: ExperimentPair,
        exp_cells: pa.Array,
        var_cells: pa.Array,
        exp_ok: np.ndarray,
        var_ok: np.ndarray,
        found: Violations,
    ) -> tuple[pa.Array, pa.Array, np.ndarray]:
        """A pair's cells against the datafile: keys resolved to ids, unknown experiments and
        variations rejected, experiments not running warned about. Returns the ids and each
        row's experiment index (-1 where none is known)."""
        lookup = self.lookup
        assert lookup is not None
        exp_column = pair.experiment_source or "experiment"
        var_column = pair.variation_source or "variation"
        by_key = pair.experiment_key_column is not None
        exp_ids = lookup.experiment_ids_of(exp_cells) if by_key else exp_cells
        index = np.where(exp_ok, lookup.experiment_index(exp_ids), -1)
        found.add(exp_ok & (index < 0), "experiment-unknown", exp_column, exp_cells)
        judged = var_ok & (index >= 0)
        if pair.variation_key_column is not None:
            var_ids = lookup.variation_ids_of(exp_ids, var_cells)
            unknown = judged & ~bools(pc.is_valid(var_ids))
        else:
            var_ids = var_cells
            unknown = judged & ~lookup.variation_known(exp_ids, var_cells)
        found.add(unknown, "variation-unknown", var_column, var_cells)
        found.warn(lookup.not_running(index), "experiment-not-running", exp_column, exp_cells)
        return exp_ids, var_ids, index

    def _experiment_column(self) -> str:
        if self.schema.experiments:
            first = self.schema.experiments[0]
            return first.experiment_column or first.variation_column or "experiments"
        assert self.schema.buckets is not None
        return self.schema.buckets.column

    def _buckets(
        self, texts: _Texts, found: Violations
    ) -> tuple[pa.Array, pa.Array, np.ndarray, Flat]:
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
        known = Flat.concat([])
        if self.lookup is not None:
            known = self._judge_buckets(parsed, encoded.indices, cells, found)
        return (
            pc.if_else(empty, none, frags),
            pc.if_else(empty, none, exp_ids),
            bools(bad),
            known,
        )

    def _judge_buckets(
        self,
        parsed: list[tuple[str, str] | None],
        indices: pa.Array,
        cells: pa.Array,
        found: Violations,
    ) -> Flat:
        """The cookies' pairs against the datafile, once per distinct cookie."""
        lookup, spec = self.lookup, self.schema.buckets
        assert lookup is not None and spec is not None
        judged = [
            lookup.judge_pairs(_pairs_of(p[0])) if p else (False, False, False, []) for p in parsed
        ]

        def per_row(k: int) -> np.ndarray:
            return bools(pa.array([j[k] for j in judged], pa.bool_()).take(indices))

        def shown() -> pa.Array:
            return start_of(cells)

        found.add(per_row(0), "experiment-unknown", spec.column, shown)
        found.add(per_row(1), "variation-unknown", spec.column, shown)
        found.warn(per_row(2), "experiment-not-running", spec.column, shown)
        lists = pa.array([j[3] for j in judged], pa.list_(pa.int64())).take(indices)
        return Flat(
            np.asarray(pc.list_parent_indices(lists), dtype=np.int64),
            np.asarray(pc.list_flatten(lists), dtype=np.int64),
        )

    def _goals(self, texts: _Texts, found: Violations, assigned: Flat) -> encode.Piece:
        spec = self.schema.goal_ids
        if spec is None:
            return None
        if spec.column is None and spec.event_key_column is None:
            goal = self.resolved.goal  # a constant: checked against the datafile already
            if self.lookup is not None and goal is not None:
                size = found.size
                ids = pa.array([goal] * size, pa.string())
                self._judge_goals(ids, np.ones(size, dtype=bool), assigned, found, "goal_ids")
            return goal
        column = spec.source_column
        assert column is not None
        cells = texts.get(column, spec.extract)  # trimmed; nothing else is taken out
        empty = pc.equal(pc.binary_length(cells), 0)
        if spec.required:
            found.add(empty, "goal-ids-missing", column, cells)
        none = pa.scalar(None, pa.string())
        if spec.event_key_column is not None:
            assert self.lookup is not None  # keys need a datafile (resolve() said so)
            ids = self.lookup.event_ids_of(cells)
            filled = ~bools(empty)
            found.add(filled & ~bools(pc.is_valid(ids)), "goal-unknown", column, cells)
            known = filled & bools(pc.is_valid(ids))
            self._judge_goals(ids, known, assigned, found, column, raw=cells)
            return ids
        bad = pc.and_(pc.invert(empty), pc.invert(pc.match_substring_regex(cells, _GOALS)))
        found.add(bad, "goal-ids-format", column, cells)
        if self.lookup is not None:
            judged = ~bools(empty) & ~bools(bad)
            unknown = self._judge_goals(cells, judged, assigned, found, column, raw=cells)
            found.add(unknown, "goal-unknown", column, cells)
        return pc.if_else(empty, none, cells)

    def _judge_goals(
        self,
        ids: pa.Array,
        judged: np.ndarray,
        assigned: Flat,
        found: Violations,
        column: str,
        raw: pa.Array | None = None,
    ) -> np.ndarray:
        """Goal ids (comma-separated) of the ``judged`` rows against the datafile: warns of
        goals attached to none of the row's experiments; returns the rows with an unknown
        goal."""
        lookup = self.lookup
        assert lookup is not None
        rows, flat = flatten(ids, np.flatnonzero(judged))
        index = lookup.goal_index(flat)
        size = found.size
        unknown = np.bincount(rows[index < 0], minlength=size) > 0
        ok = index >= 0
        lost = lookup.lost_goals(Flat(rows[ok], index[ok]), assigned, size)
        found.warn(lost, "goal-not-in-experiment", column, raw if raw is not None else ids)
        return unknown

    def _value(self, texts: _Texts, found: Violations) -> encode.Piece:
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
        ids = self.resolved.segment_ids
        for segment, segment_id in zip(self.schema.segments, ids, strict=True):
            if segment.value is not None:
                pieces.append(f"s{segment_id}={encode.quote(segment.value)}")
                continue
            assert segment.column is not None
            cells = texts.get(segment.column, segment.extract)
            empty = pc.equal(pc.binary_length(cells), 0)
            if segment.required:
                found.add(empty, "segment-missing", segment.column, cells)
            forbidden, blank = characters(cells)
            invisible = pc.or_(forbidden, pc.and_(blank, pc.invert(empty)))
            found.add(invisible, "segment-control", segment.column, cells)
            value = pc.if_else(empty, pa.scalar(None, pa.string()), encode.quote_array(cells))
            pieces.append(pc.binary_join_element_wise(f"s{segment_id}=", value, ""))
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
        rejects = _rejects(batch, found, self.masked)
        left_out = int(outside.sum()) if outside is not None else 0
        warnings = empty_rejects()
        if found.warnings and valid.any():  # only rows that are sent need the warning
            sent = [Violation(w.mask & valid, w.rule, w.column, w.raw) for w in found.warnings]
            kept = Violations(size, items=[w for w in sent if w.mask.any()])
            warnings = _rejects(dataclasses.replace(batch, malformed=()), kept, self.masked)
        return Mapped(
            batch,
            valid,
            events,
            key_list,
            rejects,
            int((~valid).sum()) - left_out + len(batch.malformed),
            filtered_by={WINDOW_FILTER: left_out} if left_out else {},
            outside_window=left_out,
            warnings=warnings,
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
        url = encode.event_urls(self.endpoint, picked, count)
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
        for name in encode.PARAM_ORDER:
            columns[name] = _column(picked[name], count, EVENTS_SCHEMA.field(name).type)
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
        empty = bools(pc.equal(pc.binary_length(cells), 0))
        return empty if spec.empty else ~empty
    if spec.matches is not None:
        pattern = f"^(?:{spec.matches})$"
        return bools(pc.match_substring_regex(cells, pattern, ignore_case=spec.ignore_case))
    wanted = spec.in_ if spec.in_ is not None else spec.not_in
    assert wanted is not None
    if spec.ignore_case:
        cells, wanted = pc.utf8_lower(cells), tuple(w.lower() for w in wanted)
    member = bools(pc.is_in(cells, value_set=pa.array([w.strip() for w in wanted], pa.string())))
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
        looks = how == "email" or bool(looks_like_email(pa.array([cells]))[0].as_py())
        return cells.lower() if looks else cells
    lowered = pc.utf8_lower(cells)
    if how == "email":
        return lowered
    return pc.if_else(looks_like_email(cells), lowered, cells)


def looks_like_email(cells: pa.Array) -> pa.Array:
    """Whether each cell holds an email address anywhere, in any of the forms of EMAIL."""
    data = _value_bytes(cells)
    if data is not None and not _may_hold_email(data):
        return pa.repeat(pa.scalar(False), len(cells))
    return pc.match_substring_regex(cells, EMAIL)


def _may_hold_email(data: np.ndarray) -> bool:
    return bool((data >= 0x80).any() or any((data == byte).any() for byte in _EMAIL_BYTES))


def _value_bytes(cells: pa.Array) -> np.ndarray | None:
    """The UTF-8 bytes of all the cells of a string column, one numpy view (no copy); None
    when the column is not a plain string array."""
    if not isinstance(cells, pa.StringArray):
        return None
    offsets_buffer, data_buffer = cells.buffers()[1:3]
    if offsets_buffer is None or data_buffer is None:
        return np.zeros(0, dtype=np.uint8)
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)
    start, end = offsets[cells.offset], offsets[cells.offset + len(cells)]
    return np.frombuffer(data_buffer, dtype=np.uint8)[start:end]


def mask_emails(values: pa.Array) -> pa.Array:
    """Email-like values as their first letter or digit, '***@' and the domain.

    ``Bob <bob@example.com>`` becomes ``B***@example.com``, ``eve\t@example.com``
    ``e***@example.com``. Any value with an @ (in any form EMAIL knows) after some
    character is masked, even without a whole domain (a cell cut short, say); others
    are kept as they are.
    """
    values = pc.cast(values, pa.string())
    maskable = pc.fill_null(pc.match_substring_regex(values, _AT_SIGN), False)
    if not pc.any(maskable).as_py():
        return values
    first = pc.utf8_slice_codeunits(
        pc.replace_substring_regex(values, r"^[^\p{L}\p{N}]+", ""), 0, 1
    )
    whole = pc.replace_substring_regex(
        values, rf"^(?s:.)*?{_AT_SIGN}({_DOMAIN})(?s:.)*$", r"\1", max_replacements=1
    )
    run = pc.replace_substring_regex(
        values, rf"^(?s:.)*?{_AT_SIGN}({_DOMAIN_RUN})(?s:.)*$", r"\1", max_replacements=1
    )
    domain = pc.if_else(looks_like_email(values), whole, run)
    masked = pc.binary_join_element_wise(first, "***@", domain, "")
    return pc.if_else(maskable, masked, values)


def characters(cells: pa.Array) -> tuple[pa.Array, pa.Array]:
    """For each text cell: whether it holds a forbidden character, and whether it has no
    visible one (empty cells included). See FORBIDDEN_CATEGORIES."""
    empty = pc.equal(pc.binary_length(cells), 0)
    data = _value_bytes(cells)
    if data is not None and not ((data < 0x20).any() or (data >= 0x7F).any()):
        return pa.repeat(pa.scalar(False), len(cells)), empty  # printable ASCII, trimmed
    if pc.all(pc.string_is_ascii(cells)).as_py() is not False:
        forbidden = pc.match_substring_regex(cells, _ASCII_FORBIDDEN)
        visible = pc.match_substring_regex(cells, _ASCII_VISIBLE)
    else:
        forbidden_class, visible_class = unicode_classes()
        forbidden = pc.match_substring_regex(cells, forbidden_class)
        visible = pc.match_substring_regex(cells, visible_class)
    return forbidden, pc.invert(visible)


@functools.cache
def unicode_classes() -> tuple[str, str]:
    """RE2 character classes: the forbidden characters, and the visible ones.

    Built once per process from Python's Unicode database, so that what is refused does not
    depend on the Unicode version of the regular expression engine. Surrogates are left
    out: they cannot occur in UTF-8 text.
    """
    names = "".join(map(unicodedata.category, map(chr, range(sys.maxunicode + 1))))
    codes = np.frombuffer(names.encode("ascii"), dtype="<u2")
    majors = codes & 0xFF  # the first letter of each two-letter category
    forbidden = np.isin(codes, [_category_code(c) for c in FORBIDDEN_CATEGORIES])
    forbidden[0xD800:0xE000] = False
    visible = np.isin(majors, [ord(c) for c in VISIBLE_CATEGORIES])
    visible[[ord(c) for c in _BLANK_LETTERS]] = False
    return _char_class(forbidden), _char_class(visible)


def _category_code(name: str) -> int:
    return int(np.frombuffer(name.encode("ascii"), dtype="<u2")[0])


def _char_class(flags: np.ndarray) -> str:
    """An RE2 character class of the code points where ``flags`` is true."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], flags, [False])).astype(np.int8)))
    parts = []
    for start, end in zip(edges[::2].tolist(), (edges[1::2] - 1).tolist(), strict=True):
        parts.append(f"\\x{{{start:X}}}" if start == end else f"\\x{{{start:X}}}-\\x{{{end:X}}}")
    return "[" + "".join(parts) + "]"


def project_id_limit(endpoint: str) -> int | None:
    """The most digits a project id may have in the endpoint's host name, or None when
    ``{project_id}`` is not in the host. DNS holds 63 bytes per label, 253 per name."""
    _, sep, rest = endpoint.partition("://")
    if not sep:
        return None
    authority = rest
    for stop in "/?#":
        authority = authority.split(stop, 1)[0]
    host = authority.rpartition("@")[2]
    if host.startswith("["):  # an IPv6 literal: preflight refuses {project_id} in it
        return None
    host = host.split(":", 1)[0].removesuffix(".")
    count = host.count(PLACEHOLDER)
    if not count:
        return None
    limits = [(MAX_HOST_BYTES - len(host.replace(PLACEHOLDER, "").encode())) // count]
    for label in host.split("."):
        if PLACEHOLDER in label:
            fixed = len(label.replace(PLACEHOLDER, "").encode())
            limits.append((MAX_LABEL_BYTES - fixed) // label.count(PLACEHOLDER))
    return max(min(limits), 0)


def _check_project_constant(schema: Schema, endpoint: str, limit: int | None, origin: str) -> None:
    """Refuse a constant project id the endpoint's host cannot hold, before reading a row."""
    value = schema.project_id.value
    if limit is None or value is None or len(value) <= limit:
        return
    raise SchemaError(
        f"project id has {len(value)} digits, but the host of {endpoint!r} holds at most "
        f"{limit} (a DNS label is at most {MAX_LABEL_BYTES} bytes, a host name "
        f"{MAX_HOST_BYTES})",
        origin=origin,
        key="project_id.value",
    )


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


def _broadcast(value: pa.Array | str, size: int) -> pa.Array:
    return pa.repeat(pa.scalar(value), size) if isinstance(value, str) else value


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


def _pairs_of(fragments: str) -> list[tuple[str, str]]:
    """("x1=2&x3=4") -> [("1", "2"), ("3", "4")]."""
    pairs = (f[1:].partition("=") for f in fragments.split("&")) if fragments else ()
    return [(exp, var) for exp, _, var in pairs]


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


def _rejects(batch: Batch, found: Violations, masked: set[str] | None = None) -> pa.Table:
    """The rejects table: the one source of the report's examples, the --rejects file and
    the --rejects-rows messages, so values of ``masked`` columns are masked here."""
    parts: list[pa.Table] = []
    for item in found.items:
        index = np.flatnonzero(item.mask)
        raw = (
            item.raw.take(pa.array(index))
            if item.raw is not None
            else pa.nulls(len(index), pa.string())
        )
        if masked and item.column in masked:
            raw = mask_emails(raw)
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
                    "message": pa.array(
                        [RULES.get(item.rule) or WARNINGS[item.rule]] * len(index), pa.string()
                    ),
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
