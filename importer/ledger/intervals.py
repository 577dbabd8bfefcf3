"""Sets of row positions kept as sorted, disjoint [start, stop) ranges.

A run of millions of rows settles them nearly in order, so its done rows are a watermark
plus a handful of ranges above it: a few rows in SQLite, not one per event.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def runs_of(positions: Iterable[int]) -> list[tuple[int, int]]:
    """Positions (any order, repeats allowed) as sorted disjoint [start, stop) ranges."""
    values = np.unique(np.fromiter(positions, dtype=np.int64))
    if not len(values):
        return []
    breaks = np.flatnonzero(np.diff(values) != 1)
    starts = np.concatenate(([values[0]], values[breaks + 1]))
    stops = np.concatenate((values[breaks] + 1, [values[-1] + 1]))
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


class IntervalSet:
    """A set of non-negative integers as sorted disjoint [start, stop) ranges."""

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts = np.zeros(0, dtype=np.int64)
        self._stops = np.zeros(0, dtype=np.int64)
        self.add_ranges(ranges)

    @property
    def ranges(self) -> list[tuple[int, int]]:
        """The ranges, in order."""
        return list(zip(self._starts.tolist(), self._stops.tolist(), strict=True))

    def __len__(self) -> int:
        return int((self._stops - self._starts).sum())

    def copy(self) -> IntervalSet:
        """An independent copy."""
        return IntervalSet(self.ranges)

    def add_ranges(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Add [start, stop) ranges, merging touching and overlapping ones."""
        new = [(a, b) for a, b in ranges if b > a]
        if not new:
            return
        starts = np.concatenate((self._starts, np.array([a for a, _ in new], dtype=np.int64)))
        stops = np.concatenate((self._stops, np.array([b for _, b in new], dtype=np.int64)))
        order = np.argsort(starts, kind="stable")
        starts, stops = starts[order], stops[order]
        reach = np.maximum.accumulate(stops)
        # A range starts a new group when it begins after everything before it has ended.
        fresh = np.concatenate(([True], starts[1:] > reach[:-1]))
        group_starts = starts[fresh]
        group_ends = np.maximum.reduceat(stops, np.flatnonzero(fresh))
        self._starts, self._stops = group_starts, group_ends

    def add(self, positions: Iterable[int]) -> None:
        """Add positions."""
        self.add_ranges(runs_of(positions))

    def remove(self, positions: Iterable[int]) -> None:
        """Remove positions (those not in the set are ignored)."""
        gone = IntervalSet(runs_of(positions))
        if not len(gone) or not len(self._starts):
            return
        kept: list[tuple[int, int]] = []
        cut = gone.ranges
        j = 0
        for start, stop in self.ranges:
            cursor = start
            while j < len(cut) and cut[j][1] <= cursor:
                j += 1
            k = j
            while k < len(cut) and cut[k][0] < stop:
                if cut[k][0] > cursor:
                    kept.append((cursor, cut[k][0]))
                cursor = max(cursor, cut[k][1])
                k += 1
            if cursor < stop:
                kept.append((cursor, stop))
        self._starts = np.array([a for a, _ in kept], dtype=np.int64)
        self._stops = np.array([b for _, b in kept], dtype=np.int64)

    def difference(self, other: IntervalSet) -> IntervalSet:
        """The positions of this set that are not in ``other``."""
        result = self.copy()
        for start, stop in other.ranges:
            result.remove(range(start, stop)) if stop - start < 1_000_000 else result._cut(
                start, stop
            )
        return result

    def _cut(self, start: int, stop: int) -> None:
        kept: list[tuple[int, int]] = []
        for a, b in self.ranges:
            if b <= start or a >= stop:
                kept.append((a, b))
                continue
            if a < start:
                kept.append((a, start))
            if b > stop:
                kept.append((stop, b))
        self._starts = np.array([a for a, _ in kept], dtype=np.int64)
        self._stops = np.array([b for _, b in kept], dtype=np.int64)

    def contains(self, positions: np.ndarray) -> np.ndarray:
        """True for each position in the set."""
        if not len(self._starts):
            return np.zeros(len(positions), dtype=bool)
        index = np.searchsorted(self._starts, positions, side="right") - 1
        inside = index >= 0
        clipped = np.clip(index, 0, None)
        result: np.ndarray = inside & (positions < self._stops[clipped])
        return result

    def covers(self, start: int, stop: int) -> bool:
        """Whether every position of [start, stop) is in the set."""
        if stop <= start:
            return True
        index = int(np.searchsorted(self._starts, start, side="right")) - 1
        return index >= 0 and int(self._stops[index]) >= stop

    def watermark(self) -> int:
        """The lowest position not in the set, counting from 0."""
        if len(self._starts) and self._starts[0] == 0:
            return int(self._stops[0])
        return 0
