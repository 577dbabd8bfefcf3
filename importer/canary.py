"""``--canary N``: which rows go first, spread over every experiment/variation pair present.

The Event API answers 200 to anything, so the only proof that events count is the results
page. A canary sends a few rows of each experiment/variation pair first, stops (resumable), and
leaves the user to look; the same command without ``--canary`` sends the rest, and the
ledger never sends a canary row twice.

The choice is made in one pass over the mapped rows that are valid and not settled yet: up
to ``n`` candidate positions are kept per pair, in file order, then taken round-robin over
the pairs in order of first appearance, so every pair gets one row before any gets two
(where ``n`` allows). Python runs once per distinct experiment fragment of a batch, not per
row, and what is held is at most ``n`` positions a pair.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow.compute as pc

from importer.mapping import Mapped
from importer.work import pairs_of

Pair = tuple[str, str]


@dataclass
class Canary:
    """The rows a canary sends, and the experiment/variation pairs they cover."""

    positions: np.ndarray  # sorted
    pairs: list[Pair]  # in order of first appearance in the file
    uncovered: list[Pair] = field(default_factory=list)  # more pairs than rows asked for

    def __len__(self) -> int:
        return len(self.positions)

    def shortfall(self) -> str | None:
        """What a user must know when the rows asked for are fewer than the pairs."""
        if not self.uncovered:
            return None
        left_out = ", ".join(f"{e}:{v}" for e, v in self.uncovered[:10])
        more = " ..." if len(self.uncovered) > 10 else ""
        covered = len(self.pairs) - len(self.uncovered)
        return (
            f"canary: {len(self):,} rows cover {covered:,} of {len(self.pairs):,} "
            f"experiment:variation pairs; not covered: {left_out}{more}. Use --canary "
            f"{len(self.pairs)} or more to cover each."
        )


def choose(batches: Iterable[Mapped], n: int) -> Canary:
    """Up to ``n`` rows, spread over every experiment/variation pair of the valid rows:
    first a row for each pair not covered yet (a row in two experiments covers both), then
    round-robin over the pairs."""
    candidates: dict[Pair, list[int]] = {}
    pairs_at: dict[int, tuple[Pair, ...]] = {}  # a candidate's pairs
    for mapped in batches:
        events = mapped.events
        if events.num_rows == 0:
            continue
        encoded = pc.dictionary_encode(events.column("x").combine_chunks())
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        positions = events.column("position").to_numpy()
        for code, fragment in enumerate(encoded.dictionary.to_pylist()):
            rows = positions[codes == code]
            pairs = pairs_of(fragment)
            for pair in pairs:
                kept = candidates.setdefault(pair, [])
                if len(kept) < n:
                    more = rows[: n - len(kept)].tolist()
                    kept.extend(more)
                    pairs_at.update(dict.fromkeys(more, pairs))
    order = list(candidates)
    chosen: set[int] = set()
    covered: set[Pair] = set()
    for pair in order:  # first, one row for each pair
        if len(chosen) >= n:
            break
        if pair not in covered:
            position = candidates[pair][0]  # never taken: it would have covered this pair
            chosen.add(position)
            covered.update(pairs_at[position])
    queues = [iter(candidates[pair]) for pair in order]
    while len(chosen) < n and queues:  # then round-robin
        for queue in list(queues):
            following = next((p for p in queue if p not in chosen), None)
            if following is None:
                queues.remove(queue)
            elif len(chosen) < n:
                chosen.add(following)
    uncovered = [pair for pair in order if pair not in covered]
    return Canary(np.array(sorted(chosen), dtype=np.int64), order, uncovered)
