"""Counts, value totals and times of a set of events: what a report says about them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa

from importer.times import day_of, iso_utc


@dataclass
class EventStats:
    """Counts, value totals and times of a set of events (valid ones, or sent ones).

    ``add_many`` runs every tick over the rows acknowledged since, so it only touches plain
    dicts; days are kept as day numbers and turned into dates when shown. Values are
    totalled per event name *and currency* (None when the schema has no currency column):
    minor units of different currencies never add up.
    """

    count: int = 0
    first: int | None = None
    last: int | None = None
    day_numbers: dict[int, int] = field(default_factory=dict)
    per_event: Counter[str] = field(default_factory=Counter)
    totals: dict[tuple[str, str | None], list[int]] = field(default_factory=dict)
    future: int = 0
    very_old: int = 0
    # For add_many: events after this epoch are in the future, before the other very old.
    future_after: float | None = None
    old_before: float = 0.0

    @property
    def value_per_event(self) -> Counter[str]:
        """Sum of v per event name; only meaningful without a currency column."""
        out: Counter[str] = Counter()
        for (name, _currency), (_n, value) in self.totals.items():
            out[name] += value
        return out

    @property
    def has_currency(self) -> bool:
        """Whether the events carry a currency (totals are then per currency)."""
        return any(currency is not None for _name, currency in self.totals)

    def _total(self, name: str, currency: str | None, n: int, value: int) -> None:
        slot = self.totals.get((name, currency))
        if slot is None:
            self.totals[name, currency] = [n, value]
        else:
            slot[0] += n
            slot[1] += value

    @property
    def days(self) -> Counter[date]:
        """Events per UTC day."""
        return Counter({day_of(day * 86_400): n for day, n in self.day_numbers.items()})

    def add_table(self, events: pa.Table, *, now: float, old_after: int) -> None:
        """Add the events of a mapped batch (columns n, v, time)."""
        if events.num_rows == 0:
            return
        times = events.column("time").to_numpy()
        self.count += events.num_rows
        low, high = int(times.min()), int(times.max())
        self.first = low if self.first is None else min(self.first, low)
        self.last = high if self.last is None else max(self.last, high)
        days, counts = np.unique(times // 86_400, return_counts=True)
        for day, n in zip(days.tolist(), counts.tolist(), strict=True):
            self.day_numbers[day] = self.day_numbers.get(day, 0) + n
        self.future += int((times > now).sum())
        self.very_old += int((times < now - old_after * 86_400).sum())
        grouped = (
            events.select(["n", "currency", "v"])
            .group_by(["n", "currency"])
            .aggregate([("v", "sum"), ("n", "count")])
        )
        for name, currency, total, n in zip(
            grouped.column("n").to_pylist(),
            grouped.column("currency").to_pylist(),
            grouped.column("v_sum").to_pylist(),
            grouped.column("n_count").to_pylist(),
            strict=True,
        ):
            self.per_event[name] += n
            self._total(name, currency, n, total or 0)

    def watch(self, *, now: float, old_after: int) -> None:
        """Count future and very old events in :meth:`add_many` too (as :meth:`add_table`)."""
        self.future_after, self.old_before = now, now - old_after * 86_400

    def add_many(
        self,
        names: list[str],
        values: list[int | None],
        times: list[int],
        currencies: list[str | None],
    ) -> None:
        """Add acknowledged events in bulk (the sender calls this every tick, not per
        request): C-level builtins over the lists instead of a method call per event."""
        if not times:
            return
        self.count += len(times)
        low, high = min(times), max(times)
        self.first = low if self.first is None else min(self.first, low)
        self.last = high if self.last is None else max(self.last, high)
        if self.future_after is not None:
            if high > self.future_after:
                self.future += sum(1 for t in times if t > self.future_after)
            if low < self.old_before:
                self.very_old += sum(1 for t in times if t < self.old_before)
        days = self.day_numbers
        for day, n in Counter([t // 86_400 for t in times]).items():
            days[day] = days.get(day, 0) + n
        keys = list(zip(names, currencies, strict=True))
        sums: dict[tuple[str, str | None], int] = {}
        for key, value in zip(keys, values, strict=True):
            if value:
                sums[key] = sums.get(key, 0) + value
        for (name, currency), n in Counter(keys).items():
            self.per_event[name] += n
            self._total(name, currency, n, sums.get((name, currency), 0))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "events": self.count,
            "first": iso_utc(self.first) if self.first is not None else None,
            "last": iso_utc(self.last) if self.last is not None else None,
            "per_day": {d.isoformat(): n for d, n in sorted(self.days.items())},
            "future": self.future,
            "very_old": self.very_old,
            "per_event": {
                name: self._event_dict(name, n) for name, n in sorted(self.per_event.items())
            },
        }

    def _event_dict(self, name: str, count: int) -> dict[str, Any]:
        if not self.has_currency:
            return {"events": count, "value": self.value_per_event.get(name, 0)}
        by_currency = {
            currency or "": {"events": n, "value": value}
            for (event, currency), (n, value) in sorted(
                self.totals.items(), key=lambda item: (item[0][0], item[0][1] or "")
            )
            if event == name
        }
        return {"events": count, "value_by_currency": by_currency}
