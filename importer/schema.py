"""Schema files: where each Event API parameter of an event comes from.

A schema is a TOML file (or a dict, or a :class:`Schema` built in Python) describing one kind
of input file. Each parameter comes from a constant (``value = "1234567"``) or a column
(``column = "customer_id"``), with per-field options. The model below is the single source
of truth: it validates files, and ``schemas/schema.json`` is generated from it
(``make schema-json``).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import tomllib
import warnings
import zoneinfo
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from importer.errors import SchemaError, UsageError

DEFAULT_ENDPOINT = "https://{project_id}.log.optimizely.com/event"
DEFAULT_MAX_URL_BYTES = 8000
DEFAULT_MAX_FUTURE_SECONDS = 300
DEFAULT_OLD_AFTER_DAYS = 365

_DIGITS = re.compile(r"[0-9]+")
_VARIATION = re.compile(r"[0-9]+(_[0-9]+)*")


_DEPTH = threading.local()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **data: Any) -> None:
        # Built in Python (a notebook), a mistake reads as it would from a file. Only the
        # outermost model translates: nested ones leave the key path to it.
        _DEPTH.value = getattr(_DEPTH, "value", 0) + 1
        try:
            super().__init__(**data)
        except ValidationError as exc:
            if _DEPTH.value > 1:
                raise
            raise _schema_error(
                exc, origin=f"{type(self).__name__}(...)", model=type(self)
            ) from None
        finally:
            _DEPTH.value -= 1


_EXTRACT_HELP = (
    "A regular expression with one group: the value is what the group matches inside the "
    "cell (e.g. 'optimizelyBuckets: (\\S+)'); a non-empty cell that does not match is a "
    "reject (extract-no-match)."
)


def check_extract(pattern: str | None, *, key: str = "extract") -> None:
    """Refuse an ``extract`` pattern that has not exactly one group.

    Patterns run in RE2 (Arrow's engine), which the mapper checks before reading; Python's
    ``re`` only counts the groups here, and a pattern it cannot read (RE2's ``\\pN``,
    ``[[:digit:]]``...) is counted by its parentheses instead.
    """
    if pattern is None:
        return
    groups = _group_count(pattern)
    if groups != 1:
        raise ValueError(
            f"'{key}' must have exactly one group (the part to keep), got {groups}: "
            f"{pattern!r}; write other groups as (?:...)"
        )


def _group_count(pattern: str) -> int:
    """Capturing groups of a regular expression (Python's count when it reads it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. FutureWarning for POSIX classes like [[:digit:]]
        try:
            return re.compile(pattern).groups
        except re.error:
            pass
    stripped = re.sub(r"\\.", "", pattern)  # escaped characters are never groups
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # nor parentheses inside a class
    return len(re.findall(r"\((?!\?)|\(\?P?<(?![=!])", stripped))


class _Source(_Model):
    """A parameter taken from a column of the file, or a constant for every row."""

    column: str | None = Field(default=None, description="Input column holding the value.")
    value: str | None = Field(default=None, description="Constant used for every row.")
    extract: str | None = Field(default=None, description=_EXTRACT_HELP)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.column is None) == (self.value is None):
            raise ValueError("give exactly one of 'column' or 'value'")
        if self.extract is not None and self.column is None:
            raise ValueError("'extract' needs 'column'")
        check_extract(self.extract)
        return self


class DigitsField(_Source):
    """An id made of ASCII digits only (project id, account id)."""

    @model_validator(mode="after")
    def _digits(self) -> Self:
        if self.value is not None and not _DIGITS.fullmatch(self.value):
            raise ValueError(f"'value' must be ASCII digits only, got {self.value!r}")
        return self


class TextField(_Source):
    """Free text such as the event name (``n``)."""

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.value is not None and not self.value.strip():
            raise ValueError("'value' must not be empty")
        return self


class UserIdField(TextField):
    """The user id (``u``), optionally hashed."""

    hash: Literal["none", "sha256"] = Field(
        default="none", description="Hash user ids (hex sha256 of salt + id) before sending."
    )
    salt_env: str | None = Field(
        default=None, description="Environment variable holding a salt for the hash."
    )
    allow_email: bool = Field(
        default=False, description="Send user ids that look like emails unhashed (not advised)."
    )
    normalize: Literal["auto", "trim", "email"] = Field(
        default="auto",
        description=(
            "Before hashing: 'trim' (surrounding whitespace only), 'email' (trim and lower-case "
            "every id), 'auto' (default: trim; with hash set, ids that look like an email "
            "address are lower-cased too, so Ana@Example.com and ana@example.com are one user)."
        ),
    )

    @model_validator(mode="after")
    def _salt_needs_hash(self) -> Self:
        if self.salt_env is not None and self.hash == "none":
            raise ValueError("'salt_env' needs hash = \"sha256\"")
        return self


class GoalIdsField(_Source):
    """Goal ids (``g``): digits, several separated by commas; or an event key resolved
    through the datafile (``--datafile``)."""

    required: bool = Field(default=False, description="Reject rows whose cell is empty.")
    event_key: str | None = Field(
        default=None, description="Constant event key; its id (from --datafile) is g."
    )
    event_key_column: str | None = Field(
        default=None,
        description="Column of event keys; each key's id (from --datafile) is g. A key the "
        "datafile does not have is a reject (goal-unknown).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [self.column, self.value, self.event_key, self.event_key_column]
        if sum(g is not None for g in given) != 1:
            raise ValueError(
                "give exactly one of 'column', 'value', 'event_key' or 'event_key_column'"
            )
        if self.extract is not None and self.column is None and self.event_key_column is None:
            raise ValueError("'extract' needs 'column' or 'event_key_column'")
        check_extract(self.extract)
        if self.event_key is not None and not self.event_key.strip():
            raise ValueError("'event_key' must not be empty")
        return self

    @model_validator(mode="after")
    def _goal_digits(self) -> Self:
        if self.value is not None and not all(_DIGITS.fullmatch(g) for g in self.value.split(",")):
            raise ValueError(f"'value' must be digits separated by commas, got {self.value!r}")
        return self

    @property
    def source_column(self) -> str | None:
        """The column read (ids or event keys), if any."""
        return self.column or self.event_key_column


Rounding = Literal["refuse", "half_even", "half_up", "down"]


class ValueField(_Model):
    """The goal value (``v``): an integer, usually money in minor units."""

    column: str | None = Field(default=None, description="Column holding the amount.")
    value: int | None = Field(default=None, description="Constant integer value for every row.")
    scale: int | None = Field(
        default=None, ge=1, description="Multiply the amount by this (100 turns 19.99 into 1999)."
    )
    currency_column: str | None = Field(
        default=None, description="Column of ISO 4217 codes; the scale follows each code."
    )
    thousands_separator: str | None = Field(
        default=None, max_length=1, description="Character grouping thousands, e.g. ','."
    )
    decimal_separator: str = Field(default=".", min_length=1, max_length=1)
    strip: str = Field(
        default="", description="Characters removed from the cell first, e.g. '$€£ '."
    )
    rounding: Rounding = Field(
        default="refuse", description="What to do when the scaled amount is not an integer."
    )
    allow_negative: bool = Field(default=False, description="Accept negative amounts (refunds).")
    required: bool = Field(default=True, description="Reject rows whose cell is empty.")
    extract: str | None = Field(default=None, description=_EXTRACT_HELP)
    currency_extract: str | None = Field(
        default=None, description="Like 'extract', for the currency column."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.column is None) == (self.value is None):
            raise ValueError("give exactly one of 'column' or 'value'")
        if self.extract is not None and self.column is None:
            raise ValueError("'extract' needs 'column'")
        if self.currency_extract is not None and self.currency_column is None:
            raise ValueError("'currency_extract' needs 'currency_column'")
        check_extract(self.extract)
        check_extract(self.currency_extract, key="currency_extract")
        if self.scale is not None and self.currency_column is not None:
            raise ValueError("give 'scale' or 'currency_column', not both")
        if self.thousands_separator is not None and self.thousands_separator == (
            self.decimal_separator
        ):
            raise ValueError("'thousands_separator' and 'decimal_separator' must differ")
        return self


class TimeField(_Model):
    """The event time (``time``, epoch seconds). A missing time is a reject, never "now"."""

    column: str = Field(description="Column holding the time.")
    extract: str | None = Field(default=None, description=_EXTRACT_HELP)
    format: str = Field(
        default="auto",
        description=(
            "'auto' (epoch if digits, else ISO 8601), 'epoch', 'iso', or a strptime pattern "
            "such as '%d/%m/%Y %H:%M'."
        ),
    )
    timezone: str | None = Field(
        default=None, description="IANA zone for times without an offset, e.g. 'Europe/Paris'."
    )
    epoch_unit: Literal["auto", "s", "ms", "us", "ns"] = Field(
        default="auto", description="Unit of epoch numbers; 'auto' decides by magnitude."
    )
    on_dst_gap: Literal["reject", "shift_forward"] = Field(
        default="reject", description="Local times that do not exist (spring forward)."
    )
    on_dst_fold: Literal["reject", "earliest", "latest"] = Field(
        default="reject", description="Local times that happen twice (fall back)."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_extract(self.extract)
        if self.timezone is not None:
            try:
                zoneinfo.ZoneInfo(self.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"unknown IANA time zone {self.timezone!r} (e.g. 'America/New_York')"
                ) from None
        if self.format not in ("auto", "epoch", "iso") and "%" not in self.format:
            raise ValueError(
                "'format' must be 'auto', 'epoch', 'iso' or a strptime pattern, "
                f"got {self.format!r}"
            )
        if "%" in self.format and "%z" not in self.format and self.timezone is None:
            raise ValueError("this 'format' has no %z offset: set 'timezone' to an IANA zone")
        return self


class ExperimentPair(_Model):
    """One experiment/variation pair (``x{experiment_id}={variation_id}``)."""

    experiment: str | None = Field(default=None, description="Constant experiment id.")
    experiment_column: str | None = Field(default=None, description="Column of experiment ids.")
    experiment_key_column: str | None = Field(
        default=None,
        description="Column of experiment keys, resolved to ids through --datafile (an "
        "unknown key is a reject: experiment-unknown).",
    )
    variation: str | None = Field(default=None, description="Constant variation id.")
    variation_column: str | None = Field(default=None, description="Column of variation ids.")
    variation_key_column: str | None = Field(
        default=None,
        description="Column of variation keys of the row's experiment, resolved to ids "
        "through --datafile (an unknown key is a reject: variation-unknown).",
    )
    experiment_extract: str | None = Field(
        default=None, description="Like 'extract', for the experiment column."
    )
    variation_extract: str | None = Field(
        default=None, description="Like 'extract', for the variation column."
    )
    required: bool = Field(
        default=True, description="Reject rows where this pair is empty (else skip the pair)."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        experiments = [self.experiment, self.experiment_column, self.experiment_key_column]
        if sum(e is not None for e in experiments) != 1:
            raise ValueError(
                "give exactly one of 'experiment', 'experiment_column' or 'experiment_key_column'"
            )
        variations = [self.variation, self.variation_column, self.variation_key_column]
        if sum(v is not None for v in variations) != 1:
            raise ValueError(
                "give exactly one of 'variation', 'variation_column' or 'variation_key_column'"
            )
        if self.experiment_extract is not None and self.experiment_source is None:
            raise ValueError("'experiment_extract' needs 'experiment_column'")
        if self.variation_extract is not None and self.variation_source is None:
            raise ValueError("'variation_extract' needs 'variation_column'")
        check_extract(self.experiment_extract, key="experiment_extract")
        check_extract(self.variation_extract, key="variation_extract")
        if self.experiment is not None and not _DIGITS.fullmatch(self.experiment):
            raise ValueError(f"'experiment' must be digits, got {self.experiment!r}")
        if self.variation is not None and not _VARIATION.fullmatch(self.variation):
            raise ValueError(
                f"'variation' must be digits (or digits joined by _), got {self.variation!r}"
            )
        return self

    @property
    def experiment_source(self) -> str | None:
        """The column of experiment ids or keys, if any."""
        return self.experiment_column or self.experiment_key_column

    @property
    def variation_source(self) -> str | None:
        """The column of variation ids or keys, if any."""
        return self.variation_column or self.variation_key_column


class BucketsField(_Model):
    """Experiment/variation pairs from one column holding a JSON object per row."""

    column: str = Field(description="Column holding the buckets.")
    format: Literal["cookie", "json"] = Field(
        default="cookie",
        description="'cookie': URL-encoded JSON as in the optimizelyBuckets cookie; 'json': plain.",
    )
    extract: str | None = Field(default=None, description=_EXTRACT_HELP)

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_extract(self.extract)
        return self


class SegmentField(_Model):
    """A segment (``s{segment_id}={value}``)."""

    id: str | None = Field(default=None, description="Segment id (digits).")
    attribute_key: str | None = Field(
        default=None,
        description="Instead of 'id': an attribute key of the datafile (--datafile), whose id "
        "is the segment id.",
    )
    column: str | None = Field(default=None, description="Column holding the segment value.")
    value: str | None = Field(default=None, description="Constant segment value.")
    extract: str | None = Field(default=None, description=_EXTRACT_HELP)
    required: bool = Field(default=False, description="Reject rows whose cell is empty.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.id is None) == (self.attribute_key is None):
            raise ValueError("give exactly one of 'id' or 'attribute_key'")
        if self.id is not None and not _DIGITS.fullmatch(self.id):
            raise ValueError(f"'id' must be digits, got {self.id!r}")
        if (self.column is None) == (self.value is None):
            raise ValueError("give exactly one of 'column' or 'value'")
        if self.extract is not None and self.column is None:
            raise ValueError("'extract' needs 'column'")
        check_extract(self.extract)
        return self


class Filter(_Model):
    """Keep only the rows whose cell passes one test; the others are not conversions.

    Rows that fail a filter are counted as *filtered*: never rejected, never sent. Every
    filter of a schema must hold (AND). Cells are compared trimmed, as text.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    column: str = Field(description="Input column to test.")
    in_: tuple[str, ...] | None = Field(
        default=None, alias="in", description="Keep rows whose cell is one of these."
    )
    not_in: tuple[str, ...] | None = Field(
        default=None, description="Keep rows whose cell is none of these."
    )
    matches: str | None = Field(
        default=None,
        description="Keep rows whose whole cell matches this regular expression (RE2 syntax).",
    )
    empty: bool | None = Field(
        default=None, description="true: keep rows whose cell is empty; false: non-empty."
    )
    ignore_case: bool = Field(
        default=False, description="Compare 'in', 'not_in' and 'matches' ignoring case."
    )

    @model_validator(mode="after")
    def _one_test(self) -> Self:
        tests = [self.in_, self.not_in, self.matches, self.empty]
        if sum(t is not None for t in tests) != 1:
            raise ValueError("give exactly one test: 'in', 'not_in', 'matches' or 'empty'")
        if self.in_ == () or self.not_in == ():
            raise ValueError("'in' and 'not_in' need at least one value")
        return self

    def describe(self) -> str:
        """How reports name this filter, e.g. ``Status in ["Paid"]``."""
        if self.in_ is not None:
            test = f"in {json.dumps(list(self.in_), ensure_ascii=False)}"
        elif self.not_in is not None:
            test = f"not_in {json.dumps(list(self.not_in), ensure_ascii=False)}"
        elif self.matches is not None:
            test = f"matches {json.dumps(self.matches, ensure_ascii=False)}"
        else:
            test = "empty" if self.empty else "not empty"
        return f"{self.column} {test}" + (" (ignoring case)" if self.ignore_case else "")


class Checks(_Model):
    """Limits every row must meet."""

    oldest: datetime | date | None = Field(
        default=None, description="Reject times before this date or datetime (UTC if naive)."
    )
    max_age_days: int | None = Field(
        default=None, ge=1, description="Reject times older than this many days before now."
    )
    max_future_seconds: int = Field(
        default=DEFAULT_MAX_FUTURE_SECONDS, ge=0, description="Allowed clock skew into the future."
    )
    old_after_days: int = Field(
        default=DEFAULT_OLD_AFTER_DAYS,
        ge=1,
        description="Count times older than this as 'very old'.",
    )
    max_url_bytes: int = Field(
        default=DEFAULT_MAX_URL_BYTES, ge=100, description="Reject requests longer than this."
    )


class CsvOptions(_Model):
    """How to read CSV files of this kind."""

    delimiter: str = Field(default="auto", description="'auto' to detect, or one character.")
    encoding: str = Field(default="utf-8", description="Text encoding (a BOM is always accepted).")
    quote_char: str = Field(default='"', min_length=1, max_length=1)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.delimiter != "auto" and len(self.delimiter) != 1:
            raise ValueError(f"'delimiter' must be 'auto' or one character, got {self.delimiter!r}")
        return self


class Schema(_Model):
    """Where each Event API parameter comes from, for one kind of input file."""

    kind: Literal["conversion", "impression"] = Field(
        default="conversion", description="'impression' sends g = the experiment id."
    )
    description: str = Field(default="", description="Free text for people.")
    endpoint: str = Field(
        default=DEFAULT_ENDPOINT, description="URL template; {project_id} is replaced per row."
    )
    filter: tuple[Filter, ...] = Field(
        default=(),
        description="Row filters, applied before validation; a row must pass every one. "
        "The others are counted as filtered, never sent.",
    )
    project_id: DigitsField = Field(description="a: the project id (digits).")
    account_id: DigitsField = Field(description="d: the account id (digits).")
    user_id: UserIdField = Field(description="u: the user id.")
    event_name: TextField = Field(description="n: the event key.")
    experiments: tuple[ExperimentPair, ...] = Field(
        default=(), description="x: experiment/variation pairs from columns or constants."
    )
    buckets: BucketsField | None = Field(
        default=None, description="x: pairs from an optimizelyBuckets cookie or JSON column."
    )
    goal_ids: GoalIdsField | None = Field(default=None, description="g: goal ids.")
    value: ValueField | None = Field(default=None, description="v: the goal value.")
    time: TimeField = Field(description="time: when the event happened.")
    segments: tuple[SegmentField, ...] = Field(default=(), description="s{id}: segments.")
    checks: Checks = Field(default_factory=Checks)
    dedupe_key: tuple[str, ...] = Field(
        default=(), description="Columns identifying an event (e.g. order id): sent once only."
    )
    csv: CsvOptions = Field(default_factory=CsvOptions)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.experiments and self.buckets is None:
            raise ValueError("give 'experiments' or 'buckets': every event needs an experiment")
        if self.kind == "impression" and self.goal_ids is not None:
            raise ValueError("an impression schema sets g to the experiment id: drop 'goal_ids'")
        check_endpoint(self.endpoint)
        return self

    def columns(self) -> list[str]:
        """Every input column this schema reads, in a stable order."""
        found: list[str | None] = [
            self.project_id.column,
            self.account_id.column,
            self.user_id.column,
            self.event_name.column,
            self.goal_ids.source_column if self.goal_ids else None,
            self.value.column if self.value else None,
            self.value.currency_column if self.value else None,
            self.time.column,
            self.buckets.column if self.buckets else None,
        ]
        for pair in self.experiments:
            found += [pair.experiment_source, pair.variation_source]
        found += [segment.column for segment in self.segments]
        found += list(self.dedupe_key)
        found += [f.column for f in self.filter]
        return list(dict.fromkeys(c for c in found if c is not None))

    def keys_used(self) -> list[str]:
        """The dotted keys that name things by key, resolved through a datafile."""
        found = [
            f"experiments[{i}].{name}"
            for i, pair in enumerate(self.experiments)
            for name in ("experiment_key_column", "variation_key_column")
            if getattr(pair, name) is not None
        ]
        if self.goal_ids is not None:
            found += [
                f"goal_ids.{name}"
                for name in ("event_key", "event_key_column")
                if getattr(self.goal_ids, name) is not None
            ]
        found += [
            f"segments[{i}].attribute_key"
            for i, segment in enumerate(self.segments)
            if segment.attribute_key is not None
        ]
        return found

    def fingerprint(self) -> str:
        """A hash of everything that changes what is sent (not the endpoint, not comments)."""
        data = self.model_dump(mode="json", exclude={"description", "endpoint", "csv"})
        _drop_unset(data)  # keys added later leave the fingerprints of older schemas alone
        if self.user_id.salt_env:
            data["salt"] = hashlib.sha256(read_salt(self.user_id.salt_env).encode()).hexdigest()
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


_LATER_KEYS = {
    "experiments": ("experiment_key_column", "variation_key_column"),
    "goal_ids": ("event_key", "event_key_column"),
    "segments": ("attribute_key",),
}


def _drop_unset(data: dict[str, Any]) -> None:
    """Remove the keys of _LATER_KEYS that are not set (None), in place."""
    for name, keys in _LATER_KEYS.items():
        tables = data.get(name)
        for table in tables if isinstance(tables, list) else [tables]:
            if isinstance(table, dict):
                for key in keys:
                    if table.get(key, "") is None:
                        del table[key]


def check_endpoint(endpoint: str) -> None:
    """Refuse endpoint templates the sender could not use (the preflight's own rules)."""
    from importer.preflight import parse_template

    parts = urlsplit(endpoint.replace("{project_id}", "0"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"'endpoint' must be an http(s) URL, got {endpoint!r}")
    try:
        parse_template(endpoint)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


def read_salt(variable: str) -> str:
    """The salt for hashing user ids, from the environment."""
    import os

    salt = os.environ.get(variable)
    if not salt:
        raise SchemaError(
            f"environment variable {variable} is not set: export the salt before running",
            key="user_id.salt_env",
        )
    return salt


def load_schema(source: str | Path | Mapping[str, Any] | Schema) -> Schema:
    """Load a schema from a TOML path, a dict or a :class:`Schema`.

    Raises:
        SchemaError: naming the file (or "schema" for a dict) and each wrong key.
    """
    if isinstance(source, Schema):
        return source
    if isinstance(source, Mapping):
        return _validate(dict(source), origin="schema")
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SchemaError(
            "file not found: pass --schema with a schema TOML file", origin=str(path)
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"cannot read: {exc}", origin=str(path)) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SchemaError(f"not valid TOML: {exc}", origin=str(path)) from exc
    return _validate(data, origin=str(path))


def todo_keys(data: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value is still a ``TODO`` placeholder (as ``init`` leaves them)."""
    if isinstance(data, Mapping):
        found = []
        for key, value in data.items():
            found += todo_keys(value, f"{prefix}.{key}" if prefix else str(key))
        return found
    if isinstance(data, list | tuple):
        found = []
        for i, value in enumerate(data):
            found += todo_keys(value, f"{prefix}[{i}]")
        return found
    return [prefix] if isinstance(data, str) and data.lstrip().startswith("TODO") else []


def _validate(data: dict[str, Any], *, origin: str) -> Schema:
    todos = todo_keys(data)
    if todos:
        raise SchemaError(
            f"{len(todos)} value{'s are' if len(todos) > 1 else ' is'} still TODO: "
            + ", ".join(todos)
            + ". Fill each in (its comment says what it needs), then check again.",
            origin=origin,
        )
    _DEPTH.value = getattr(_DEPTH, "value", 0) + 1  # this call names the origin, not __init__
    try:
        return Schema.model_validate(data)
    except ValidationError as exc:
        raise _schema_error(exc, origin=origin, model=Schema) from None
    finally:
        _DEPTH.value -= 1


def _schema_error(exc: ValidationError, *, origin: str, model: type[BaseModel]) -> SchemaError:
    problems = [_describe(error, model) for error in exc.errors(include_url=False)]
    if len(problems) == 1:
        key, text = problems[0]
        return SchemaError(text, origin=origin, key=key or None)
    lines = [f"key '{key}': {text}" if key else text for key, text in problems]
    return SchemaError("\n  " + "\n  ".join(lines), origin=origin)


def _dotted(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif part in _UNION_TAGS:
            continue
        else:
            key += f".{part}" if key else str(part)
    return key


# pydantic puts the member type of a union into the error location; a user never wrote it.
_UNION_TAGS = {"datetime", "date", "str", "int"}


def _describe(error: Mapping[str, Any], model: type[BaseModel]) -> tuple[str, str]:
    """(dotted key, what is wrong) for one pydantic error."""
    key = _dotted(tuple(error["loc"]))
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _known_keys(tuple(error["loc"])[:-1], model)
        return key, f"unknown key; this table takes: {', '.join(known)}"
    if kind == "missing":
        return key, "missing; add it (see `event-backfill schema --json-schema`)"
    message = str(error["msg"]).removeprefix("Value error, ")
    got = error.get("input")
    show = kind != "value_error" and not isinstance(got, dict)
    return key, f"{message} (got {got!r})" if show else message


def _known_keys(loc: tuple[int | str, ...], root: type[BaseModel]) -> list[str]:
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _model_of(field.annotation)
        if model is None:
            return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def example_schemas() -> dict[str, Path]:
    """The example schema files shipped in the package, by name (e.g. "payments")."""
    folder = Path(__file__).parent / "schemas"
    return {path.stem: path for path in sorted(folder.glob("*.toml"))}


def json_schema() -> dict[str, Any]:
    """The JSON Schema of schema files, generated from :class:`Schema`."""
    generated = Schema.model_json_schema()
    generated["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    generated["$comment"] = (
        "Generated from importer.schema.Schema by `make schema-json`; do not edit."
    )
    return generated


def json_schema_text() -> str:
    """:func:`json_schema` as the text of ``schemas/schema.json``."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
