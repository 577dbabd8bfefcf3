"""The ledger: which rows of a run are settled, leased, failed; which dedupe keys were sent.

:class:`MemoryLedger` keeps it for one process (``--no-ledger``); the SQLite ledger that
survives crashes is :class:`importer.store.SqliteLedger`. Both answer the same calls:

* before mapping: :meth:`settled_range` / :meth:`settled_mask` (skip what an earlier run did);
* before sending: :meth:`admit` (settle rejected rows, skip duplicate keys, lease the rest);
* while sending: :meth:`done`, :meth:`failed`, :meth:`unsent` (from the sender);
* every ~200 ms and at the end: :meth:`flush`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from importer.mapping import Mapped
from importer.sender import Failure, Work


@dataclass
class Admitted:
    """The rows of a mapped batch that go to the sender, and what was kept back."""

    work: Work | None
    duplicates: int


def work_of(mapped: Mapped, keep: np.ndarray | None = None) -> Work | None:
    """The valid rows of a mapped batch (those where ``keep`` is true) as sender Work."""
    events = mapped.events
    if keep is not None:
        events = events.filter(pa.array(keep))
    if events.num_rows == 0:
        return None
    return Work(
        positions=events.column("position").to_pylist(),
        urls=events.column("url").to_pylist(),
        names=events.column("n").to_pylist(),
        values=events.column("v").to_pylist(),
        times=events.column("time").to_pylist(),
        file=mapped.batch.file,
        rows=events.column("row").to_pylist(),
        lines=events.column("line").to_pylist(),
    )


def first_occurrences(keys: list[str]) -> np.ndarray:
    """True for each key not seen earlier in the list."""
    seen: set[str] = set()
    out = np.zeros(len(keys), dtype=bool)
    for i, key in enumerate(keys):
        if key not in seen:
            seen.add(key)
            out[i] = True
    return out


class MemoryLedger:
    """A ledger for one process: nothing survives it, but duplicate keys are still caught."""

    def __init__(self) -> None:
        self._keys: set[str] = set()

    def settled_range(self, start: int, stop: int) -> bool:
        """Nothing is settled before a run with no ledger."""
        return False

    def settled_mask(self, positions: np.ndarray) -> np.ndarray:
        """Nothing is settled before a run with no ledger."""
        return np.zeros(len(positions), dtype=bool)

    def admit(self, mapped: Mapped) -> Admitted:
        """Skip rows whose dedupe key came earlier in this run."""
        if mapped.keys is None:
            return Admitted(work_of(mapped), 0)
        keep = np.array([key not in self._keys for key in mapped.keys], dtype=bool)
        keep &= first_occurrences(mapped.keys)
        self._keys.update(mapped.keys)
        return Admitted(work_of(mapped, keep), int((~keep).sum()))

    def done(self, position: int) -> None:
        """Nothing to record."""

    def failed(self, failure: Failure) -> None:
        """Nothing to record."""

    def unsent(self, positions: list[int], ambiguous: list[int]) -> None:
        """Nothing to record."""

    def flush(self) -> None:
        """Nothing to write."""

    def close(self) -> None:
        """Nothing to close."""


def distinct_positions(table: pa.Table) -> int:
    """How many distinct rows a rejects table names."""
    return int(pc.count_distinct(table.column("position")).as_py()) if table.num_rows else 0
