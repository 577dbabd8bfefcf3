"""The project's datafile: which ids and keys exist, so events that would never count are
caught before they are sent.

The Event API answers 200 to every request, also for an experiment id that does not exist, a
variation of another experiment or a goal of another project: such events are accepted and
never counted. The datafile — the JSON the Optimizely SDKs download: ``projectId``,
``accountId``, ``revision``, ``experiments`` (also inside ``groups`` and ``rollouts``, as the
python-sdk's ``ProjectConfig`` reads them), ``events`` with their ``experimentIds``,
``attributes`` — says what exists.

:func:`load_datafile` reads one from a file, an http(s) URL (fetched once) or a dict.
:class:`Lookup` holds it as small Arrow and numpy tables: every check joins a whole column
against them (``index_in``, ``is_in``, a sorted array of goal/experiment links), never a
Python loop over rows. :func:`judge_event` is the plain per-event reference the vectorized
checks are tested against.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from importer.arrow import bools
from importer.errors import SchemaError, UsageError
from importer.schema import Schema

DEFAULT_TIMEOUT = 10.0  # seconds to wait for a datafile URL's answer
DENSE_LINKS = 1 << 24  # goal/experiment pairs held as a table of booleans up to this many
MAX_BYTES = 64 * 1024 * 1024  # a datafile is rarely above a few MB
RUNNING = "Running"  # the one status the SDKs treat as running
_SEP = "\x1f"  # joins an experiment id and a variation id or key into one lookup value
_NEXT = "Pass the project's datafile (the JSON the Optimizely SDKs download)."


@dataclass(frozen=True)
class Variation:
    """A variation of an experiment."""

    id: str
    key: str


@dataclass(frozen=True)
class Experiment:
    """An experiment (or a rollout rule): its id, key, status and variations."""

    id: str
    key: str
    status: str
    variations: tuple[Variation, ...] = ()


@dataclass(frozen=True)
class Event:
    """An event (a goal id for ``g``) and the experiments it is attached to."""

    id: str
    key: str
    experiment_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Datafile:
    """What a project's datafile says exists.

    Attributes:
        source: where it was read from (a path, a URL, or "<datafile>" for a dict).
        project_id, account_id: the ``a`` and ``d`` every event must carry.
        revision: the datafile's revision (shown in reports), None when it has none.
        experiments: every experiment, group experiments and rollout rules included.
        events: the events (goals).
        attributes: attribute key -> the segment id ``s{id}`` takes.
    """

    source: str
    project_id: str
    account_id: str
    revision: str | None = None
    experiments: tuple[Experiment, ...] = ()
    events: tuple[Event, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for reports: where, which revision, which project."""
        revision = self.revision if self.revision is not None else "none"
        return (
            f"datafile {self.source}: revision {revision} (project {self.project_id}, account "
            f"{self.account_id}; {len(self.experiments):,} experiments, {len(self.events):,} "
            f"events, {len(self.attributes):,} attributes)"
        )

    @cached_property
    def experiment_by_id(self) -> dict[str, Experiment]:
        """Each experiment by its id."""
        return {e.id: e for e in self.experiments}

    @cached_property
    def event_by_id(self) -> dict[str, Event]:
        """Each event by its id."""
        return {e.id: e for e in self.events}

    @cached_property
    def lookup(self) -> Lookup:
        """The datafile as lookup tables (built once)."""
        return Lookup(self)


DatafileLike: TypeAlias = "str | Path | Mapping[str, Any] | Datafile"


# -- loading --------------------------------------------------------------------------------


def load_datafile(source: DatafileLike, *, timeout: float | None = None) -> Datafile:
    """Read a datafile from a path, an http(s) URL, a dict, or return a :class:`Datafile`.

    A URL is fetched once (http or https), waiting ``timeout`` seconds at most for the answer
    (default ``DEFAULT_TIMEOUT``).

    Raises:
        UsageError: the file or URL cannot be read, is not JSON, or is not a datafile; the
            message names it and says what to do.
    """
    if isinstance(source, Datafile):
        return source
    if isinstance(source, Mapping):
        return parse_datafile(source, origin="<datafile>")
    text = str(source)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("http", "https"):
        raw = _fetch(text, DEFAULT_TIMEOUT if timeout is None else timeout)
    elif scheme:
        raise UsageError(
            f"datafile {text}: only http and https URLs can be fetched; download it and pass "
            "its path"
        )
    else:
        raw = _read(Path(text))
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"datafile {text}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}). {_NEXT}"
        ) from None
    except ValueError:  # bytes that are not UTF-8 (or -16, -32) text
        raise UsageError(f"datafile {text}: not JSON text (not UTF-8). {_NEXT}") from None
    if not isinstance(data, Mapping):
        raise UsageError(f"datafile {text}: a JSON {type(data).__name__}, not an object. {_NEXT}")
    return parse_datafile(data, origin=text)


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"datafile {path}: file not found. {_NEXT}") from None
    except IsADirectoryError:
        raise UsageError(f"datafile {path}: is a directory; give the JSON file") from None
    except OSError as exc:
        raise UsageError(f"datafile {path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise UsageError(f"datafile {path}: more than {MAX_BYTES:,} bytes: not a datafile")
    return raw


def _fetch(url: str, timeout: float) -> bytes:
    """GET a datafile URL once: redirects followed, TLS verified; ``timeout`` seconds for the
    server to answer, and for the whole answer to arrive."""
    from importer._version import __version__
    from importer.preflight import verifying_context

    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": f"event-backfill/{__version__}"}
    )
    deadline = time.monotonic() + timeout
    https = urllib.request.HTTPSHandler(context=verifying_context())
    opener = urllib.request.build_opener(https)
    chunks: list[bytes] = []
    size = 0
    try:
        with opener.open(request, timeout=timeout) as answer:
            while chunk := answer.read(65_536):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BYTES:
                    raise UsageError(
                        f"datafile {url}: more than {MAX_BYTES:,} bytes: not a datafile"
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError
    except urllib.error.HTTPError as exc:
        exc.close()  # the error answer's connection
        raise UsageError(
            f"datafile {url}: the server answered {exc.code} {exc.reason}; check the URL (and the "
            "SDK key in it), or download the datafile and pass its path"
        ) from None
    except ValueError as exc:
        raise UsageError(f"datafile {url}: not a valid URL: {exc}") from None
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
            said = f"no complete answer within {timeout:g} s"
        else:
            said = f"cannot fetch it: {reason}"
        raise UsageError(
            f"datafile {url}: {said}; check the URL and the network, or download the datafile "
            "and pass its path"
        ) from None
    return b"".join(chunks)


def parse_datafile(data: Mapping[str, Any], *, origin: str = "<datafile>") -> Datafile:
    """A datafile from its decoded JSON, read the way the python-sdk's ProjectConfig reads it.

    Experiments come from ``experiments``, ``rollouts[].experiments`` and
    ``groups[].experiments``; a key that comes twice keeps the last one, as in the SDK.
    Attributes come from ``attributes`` (``id``), or a version 1 file's ``dimensions``
    (``segmentId``).

    Raises:
        UsageError: naming the datafile and the key that is missing or wrong.
    """
    reader = _Reader(origin)
    project = reader.digits(data, "projectId", "")
    account = reader.digits(data, "accountId", "")
    revision = data.get("revision")
    places = [("experiments", data.get("experiments", []))]
    for name in ("rollouts", "groups"):
        for i, holder in enumerate(reader.items(data.get(name, []), name)):
            places.append((f"{name}[{i}].experiments", holder.get("experiments", [])))
    by_key: dict[str, Experiment] = {}
    for where, items in places:
        for i, item in enumerate(reader.items(items, where)):
            experiment = reader.experiment(item, f"{where}[{i}]")
            by_key[experiment.key] = experiment
    by_id = {e.id: e for e in by_key.values()}
    events = tuple(
        reader.event(item, f"events[{i}]")
        for i, item in enumerate(reader.items(data.get("events", []), "events"))
    )
    attributes = reader.attributes(data)
    return Datafile(
        source=origin,
        project_id=project,
        account_id=account,
        revision=None if revision is None else str(revision),
        experiments=tuple(by_id.values()),
        events=events,
        attributes=attributes,
    )


class _Reader:
    """Reads the parts of a datafile, naming the datafile and key in every error."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, where: str, problem: str) -> UsageError:
        return UsageError(f"datafile {self.origin}: key '{where}': {problem}. {_NEXT}")

    def mapping(self, value: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"expected an object, got {type(value).__name__}")
        return value

    def items(self, value: Any, where: str) -> list[Mapping[str, Any]]:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {type(value).__name__}")
        return [self.mapping(item, f"{where}[{i}]") for i, item in enumerate(value)]

    def text(self, item: Mapping[str, Any], name: str, where: str) -> str:
        value = item.get(name)
        if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
            raise self.fail(f"{where}.{name}" if where else name, "missing or not a string")
        return str(value)

    def digits(self, item: Mapping[str, Any], name: str, where: str) -> str:
        value = self.text(item, name, where)
        if not (value.isascii() and value.isdigit()):
            raise self.fail(f"{where}.{name}" if where else name, f"not digits: {value!r}")
        return value

    def experiment(self, item: Mapping[str, Any], where: str) -> Experiment:
        variations = tuple(
            Variation(
                self.text(v, "id", f"{where}.variations[{i}]"),
                self.text(v, "key", f"{where}.variations[{i}]"),
            )
            for i, v in enumerate(self.items(item.get("variations", []), f"{where}.variations"))
        )
        status = item.get("status")
        return Experiment(
            self.text(item, "id", where),
            self.text(item, "key", where),
            status if isinstance(status, str) else "",
            variations,
        )

    def event(self, item: Mapping[str, Any], where: str) -> Event:
        linked = item.get("experimentIds", [])
        if not isinstance(linked, list):
            raise self.fail(f"{where}.experimentIds", "expected a list of experiment ids")
        return Event(
            self.text(item, "id", where), self.text(item, "key", where), tuple(map(str, linked))
        )

    def attributes(self, data: Mapping[str, Any]) -> dict[str, str]:
        found: dict[str, str] = {}
        for i, item in enumerate(self.items(data.get("attributes", []), "attributes")):
            found[self.text(item, "key", f"attributes[{i}]")] = self.text(
                item, "id", f"attributes[{i}]"
            )
        for i, item in enumerate(self.items(data.get("dimensions", []), "dimensions")):
            where = f"dimensions[{i}]"
            segment = "segmentId" if item.get("segmentId") is not None else "id"
            found.setdefault(self.text(item, "key", where), self.text(item, segment, where))
        return found


# -- the reference: one event at a time ------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """What the datafile says of one event: the rules it breaks, and its warnings."""

    rejects: frozenset[str]
    warnings: frozenset[str]


def judge_event(
    datafile: Datafile,
    *,
    project_id: str | None,
    account_id: str | None,
    pairs: Sequence[tuple[str, str]],
    goals: Sequence[str] = (),
) -> Judgement:
    """The plain reference: one event's ids against the datafile, in Python.

    ``pairs`` are (experiment id, variation id) as sent in ``x``; a variation joined by
    ``_`` is known when it is a variation of that experiment, or each part is. ``goals`` are
    the ids of ``g`` (an impression's ``g`` is its experiment: pass none).
    """
    experiments, events = datafile.experiment_by_id, datafile.event_by_id
    rejects: set[str] = set()
    warnings: set[str] = set()
    if project_id is not None and project_id != datafile.project_id:
        rejects.add("project-mismatch")
    if account_id is not None and account_id != datafile.account_id:
        rejects.add("account-mismatch")
    known: list[str] = []
    for exp, var in pairs:
        experiment = experiments.get(exp)
        if experiment is None:
            rejects.add("experiment-unknown")
            continue
        known.append(exp)
        ids = {v.id for v in experiment.variations}
        if var not in ids and not all(part in ids for part in var.split("_")):
            rejects.add("variation-unknown")
        if experiment.status != RUNNING:
            warnings.add("experiment-not-running")
    for goal in goals:
        event = events.get(goal)
        if event is None:
            rejects.add("goal-unknown")
        elif known and not set(known) & set(event.experiment_ids):
            warnings.add("goal-not-in-experiment")
    return Judgement(frozenset(rejects), frozenset(warnings))


# -- the vectorized checks -----------------------------------------------------------------


@dataclass(frozen=True)
class Flat:
    """Many values per row, flattened: ``values[i]`` belongs to row ``rows[i]``."""

    rows: np.ndarray
    values: np.ndarray

    @staticmethod
    def concat(parts: Iterable[Flat]) -> Flat:
        """Several flattenings of the same rows as one."""
        items = [p for p in parts if len(p.rows)]
        if len(items) <= 1:
            return items[0] if items else Flat(np.zeros(0, np.int64), np.zeros(0, np.int64))
        return Flat(
            np.concatenate([p.rows for p in items]), np.concatenate([p.values for p in items])
        )


class Lookup:
    """A datafile as small lookup tables the mapper joins whole columns against."""

    def __init__(self, datafile: Datafile) -> None:
        self.datafile = datafile
        experiments = datafile.experiments
        self.experiment_ids = pa.array([e.id for e in experiments], pa.string())
        self.experiment_keys = pa.array([e.key for e in experiments], pa.string())
        self.running = np.array([e.status == RUNNING for e in experiments] + [False], bool)
        pairs = [(e.id, v) for e in experiments for v in e.variations]
        self.variation_pairs = pa.array([f"{e}{_SEP}{v.id}" for e, v in pairs], pa.string())
        self.variation_keys = pa.array([f"{e}{_SEP}{v.key}" for e, v in pairs], pa.string())
        self.variation_key_ids = pa.array([v.id for _, v in pairs], pa.string())
        self.event_ids = pa.array([e.id for e in datafile.events], pa.string())
        self.event_keys = pa.array([e.key for e in datafile.events], pa.string())
        self.width = max(len(experiments), 1)
        index = {e.id: i for i, e in enumerate(experiments)}
        codes = [
            goal * self.width + index[exp]
            for goal, event in enumerate(datafile.events)
            for exp in event.experiment_ids
            if exp in index
        ]
        self.links = np.unique(np.array(codes, np.int64))
        # Small projects (most): a goal x experiment table of booleans, indexed directly.
        cells = max(len(datafile.events), 1) * self.width
        self.attached: np.ndarray | None = None
        if cells <= DENSE_LINKS:
            self.attached = np.zeros(cells, bool)
            self.attached[self.links] = True
        self._by_id = {e.id: (i, e) for i, e in enumerate(experiments)}

    # single values, for constants and the cookie's pairs (once per distinct value)

    def experiment(self, experiment_id: str) -> tuple[int, Experiment] | None:
        """The index and experiment of an id, or None."""
        return self._by_id.get(experiment_id)

    def judge_pairs(self, pairs: Sequence[tuple[str, str]]) -> tuple[bool, bool, bool, list[int]]:
        """Of (experiment, variation) pairs: any unknown experiment, any unknown variation,
        any experiment not running, and the indices of the known experiments."""
        judged = judge_event(self.datafile, project_id=None, account_id=None, pairs=pairs)
        found = [self._by_id[exp][0] for exp, _ in pairs if exp in self._by_id]
        return (
            "experiment-unknown" in judged.rejects,
            "variation-unknown" in judged.rejects,
            "experiment-not-running" in judged.warnings,
            found,
        )

    # whole columns

    def experiment_index(self, ids: pa.Array) -> np.ndarray:
        """Each id's index among the experiments; -1 where unknown or null."""
        return _index(ids, self.experiment_ids)

    def experiment_ids_of(self, keys: pa.Array) -> pa.Array:
        """Each experiment key's id; null where the key is unknown."""
        return pc.take(self.experiment_ids, pc.index_in(keys, value_set=self.experiment_keys))

    def not_running(self, index: np.ndarray) -> np.ndarray:
        """For experiment indices (-1: none), whether that experiment is not running."""
        running = np.asarray(self.running[index], dtype=bool)  # index -1: the last, False
        return np.asarray((index >= 0) & ~running, dtype=bool)

    def variation_known(self, experiment_ids: pa.Array, variation_ids: pa.Array) -> np.ndarray:
        """Whether each variation (or each '_'-joined part) belongs to the row's experiment."""
        joined = pc.binary_join_element_wise(experiment_ids, variation_ids, _SEP)
        known = bools(pc.is_in(joined, value_set=self.variation_pairs))
        several = ~known & bools(pc.match_substring(variation_ids, "_"))
        if not several.any():
            return known
        rows = np.flatnonzero(several)
        parts = pc.split_pattern(variation_ids.take(pa.array(rows)), "_")
        owners = rows[np.asarray(pc.list_parent_indices(parts))]
        flat = pc.list_flatten(parts)
        pieces = pc.binary_join_element_wise(experiment_ids.take(pa.array(owners)), flat, _SEP)
        ok = bools(pc.is_in(pieces, value_set=self.variation_pairs))
        known[rows] = True
        known[owners[~ok]] = False
        return known

    def variation_ids_of(self, experiment_ids: pa.Array, keys: pa.Array) -> pa.Array:
        """Each variation key's id within the row's experiment; null where it has none."""
        joined = pc.binary_join_element_wise(experiment_ids, keys, _SEP)
        return pc.take(self.variation_key_ids, pc.index_in(joined, value_set=self.variation_keys))

    def goal_index(self, ids: pa.Array) -> np.ndarray:
        """Each goal id's index among the events; -1 where unknown or null."""
        return _index(ids, self.event_ids)

    def event_ids_of(self, keys: pa.Array) -> pa.Array:
        """Each event key's id; null where the key is unknown."""
        return pc.take(self.event_ids, pc.index_in(keys, value_set=self.event_keys))

    def lost_goals(self, goals: Flat, experiments: Flat, size: int) -> np.ndarray:
        """Rows with a known goal attached to none of the row's known experiments.

        ``goals`` and ``experiments`` hold indices (>= 0) per row. Each goal is paired with
        every experiment of its row (a cross product per row, built with numpy repeats) and
        the pairs are looked up in the sorted links.
        """
        if not len(goals.rows):
            return np.zeros(size, bool)
        if not len(experiments.rows) or np.bincount(experiments.rows).max() <= 1:
            return self._lost_one_experiment(goals, experiments, size)  # the usual case
        order = np.argsort(experiments.rows, kind="stable")
        exp_rows, exp_values = experiments.rows[order], experiments.values[order]
        counts = np.bincount(exp_rows, minlength=size)
        starts = np.cumsum(counts) - counts
        reps = counts[goals.rows]
        goal_of = np.repeat(np.arange(len(goals.rows)), reps)
        within = np.arange(int(reps.sum())) - np.repeat(np.cumsum(reps) - reps, reps)
        positions = np.repeat(starts[goals.rows], reps) + within
        linked = self._linked(goals.values[goal_of], exp_values[positions])
        attached = np.bincount(goal_of, weights=linked, minlength=len(goals.rows)) > 0
        lost = ~attached & (reps > 0)
        return np.bincount(goals.rows[lost], minlength=size) > 0

    def _lost_one_experiment(self, goals: Flat, experiments: Flat, size: int) -> np.ndarray:
        """lost_goals when no row has more than one known experiment: no cross product."""
        experiment_of = np.full(size, -1, np.int64)
        experiment_of[experiments.rows] = experiments.values
        paired = experiment_of[goals.rows]
        has = paired >= 0
        linked = np.zeros(len(paired), bool)
        linked[has] = self._linked(goals.values[has], paired[has])
        return np.bincount(goals.rows[has & ~linked], minlength=size) > 0

    def _linked(self, goals: np.ndarray, experiments: np.ndarray) -> np.ndarray:
        """Whether each goal (event index) is attached to the experiment (index) beside it."""
        codes = goals * self.width + experiments
        if self.attached is not None:
            return np.asarray(self.attached[codes], dtype=bool)
        if not len(self.links):
            return np.zeros(len(codes), bool)
        where = np.minimum(np.searchsorted(self.links, codes), len(self.links) - 1)
        return np.asarray(self.links[where] == codes, dtype=bool)


def _index(cells: pa.Array, values: pa.Array) -> np.ndarray:
    found = pc.fill_null(pc.index_in(cells, value_set=values), -1)
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.int64)


def flatten(cells: pa.Array, rows: np.ndarray, separator: str = ",") -> tuple[np.ndarray, pa.Array]:
    """The ``separator``-joined values of the cells at ``rows``: (row of each, values)."""
    picked = cells.take(pa.array(rows, pa.int64())) if len(rows) != len(cells) else cells
    if not pc.any(pc.match_substring(picked, separator)).as_py():
        return rows, picked
    parts = pc.split_pattern(picked, separator)
    owners = rows[np.asarray(pc.list_parent_indices(parts))]
    return owners, pc.list_flatten(parts)


# -- a schema against a datafile ------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """A schema's constants resolved through a datafile (or as written, without one).

    Attributes:
        goal: the constant ``g`` (an ``event_key``'s id, or ``goal_ids.value``), if any.
        segment_ids: the id of each segment (an ``attribute_key``'s id, or ``id``).
    """

    goal: str | None
    segment_ids: tuple[str, ...]


def resolve(schema: Schema, datafile: Datafile | None, origin: str = "schema") -> Resolved:
    """Check a schema's constants against the datafile and resolve its constant keys.

    Constants are checked here, before a row is read, as ``_check_project_constant`` does
    for project ids: a wrong constant would reject every row.

    Raises:
        SchemaError: keys without a datafile, or a constant the datafile does not have.
    """
    keys = schema.keys_used()
    if datafile is None:
        if keys:
            more = f" (also {', '.join(keys[1:])})" if len(keys) > 1 else ""
            raise SchemaError(
                "names things by key, and keys are resolved through the project's datafile"
                f"{more}: pass --datafile PATH_OR_URL (in Python: datafile=...), or use ids",
                origin=origin,
                key=keys[0],
            )
        goal = schema.goal_ids.value if schema.goal_ids is not None else None
        return Resolved(goal, tuple(s.id or "" for s in schema.segments))
    _Constants(schema, datafile, origin).check()
    spec = schema.goal_ids
    goal = spec.value if spec is not None else None
    if spec is not None and spec.event_key is not None:
        event = next((e for e in datafile.events if e.key == spec.event_key), None)
        if event is None:
            raise _unknown(
                origin,
                "goal_ids.event_key",
                spec.event_key,
                "event",
                datafile,
                [e.key for e in datafile.events],
            )
        goal = event.id
    segment_ids = []
    for i, segment in enumerate(schema.segments):
        if segment.attribute_key is None:
            segment_ids.append(segment.id or "")
        elif segment.attribute_key in datafile.attributes:
            segment_ids.append(datafile.attributes[segment.attribute_key])
        else:
            raise _unknown(
                origin,
                f"segments[{i}].attribute_key",
                segment.attribute_key,
                "attribute",
                datafile,
                list(datafile.attributes),
            )
    return Resolved(goal, tuple(segment_ids))


def _unknown(
    origin: str, key: str, value: str, what: str, datafile: Datafile, known: list[str]
) -> SchemaError:
    shown = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
    return SchemaError(
        f"{value!r} is not an {what} key of the {datafile.describe()}; its {what} keys: "
        f"{shown or 'none'}",
        origin=origin,
        key=key,
    )


class _Constants:
    """The constant ids of a schema against the datafile."""

    def __init__(self, schema: Schema, datafile: Datafile, origin: str) -> None:
        self.schema, self.datafile, self.origin = schema, datafile, origin

    def fail(self, key: str, problem: str, rule: str) -> SchemaError:
        return SchemaError(
            f"{problem} ({self.datafile.describe()}): every row would be rejected ({rule}); "
            "fix the schema, or pass this project's datafile",
            origin=self.origin,
            key=key,
        )

    def check(self) -> None:
        schema, datafile = self.schema, self.datafile
        for name, field_name, want, rule in (
            ("project_id", "projectId", datafile.project_id, "project-mismatch"),
            ("account_id", "accountId", datafile.account_id, "account-mismatch"),
        ):
            value = getattr(schema, name).value
            if value is not None and value != want:
                said = f"{value} is not the datafile's {field_name} {want}"
                raise self.fail(f"{name}.value", said, rule)
        for i, pair in enumerate(schema.experiments):
            self._pair(i, pair.experiment, pair.variation)
        goals = schema.goal_ids.value if schema.goal_ids is not None else None
        for goal in goals.split(",") if goals else []:
            if goal not in datafile.event_by_id:
                raise self.fail("goal_ids.value", f"{goal} is not an event", "goal-unknown")

    def _pair(self, i: int, experiment: str | None, variation: str | None) -> None:
        if experiment is None:
            return
        found = self.datafile.experiment_by_id.get(experiment)
        if found is None:
            key = f"experiments[{i}].experiment"
            raise self.fail(key, f"{experiment} is not an experiment", "experiment-unknown")
        if variation is None:
            return
        judged = judge_event(
            self.datafile, project_id=None, account_id=None, pairs=[(experiment, variation)]
        )
        if "variation-unknown" in judged.rejects:
            key = f"experiments[{i}].variation"
            raise self.fail(
                key, f"{variation} is not a variation of {experiment}", "variation-unknown"
            )
