"""EventStats.add_many (what the sender adds every tick) against add_table (Arrow, per batch)."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from importer.stats import EventStats

NOW = 1_780_000_000
rows = st.lists(
    st.tuples(
        st.sampled_from(["purchase", "refund", "signup"]),
        st.one_of(st.none(), st.integers(0, 10**9)),
        st.integers(NOW - 900 * 86_400, NOW + 5 * 86_400),
        st.sampled_from(["EUR", "USD", None]),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(rows, min_size=1, max_size=4))
def test_add_many_counts_as_add_table_does(ticks: list[list[tuple]]) -> None:  # type: ignore[type-arg]
    """Ticks of acknowledged rows added in bulk give the same counts, times, days, future and
    very-old events and totals per event and currency as the same rows added as tables."""
    bulk, tables = EventStats(), EventStats()
    bulk.watch(now=NOW, old_after=730)
    for tick in ticks:
        names = [r[0] for r in tick]
        values = [r[1] for r in tick]
        times = [r[2] for r in tick]
        currencies = [r[3] for r in tick]
        bulk.add_many(names, values, times, currencies)
        table = pa.table(
            {
                "n": pa.array(names, pa.string()),
                "v": pa.array(values, pa.int64()),
                "time": pa.array(times, pa.int64()),
                "currency": pa.array(currencies, pa.string()),
            }
        )
        tables.add_table(table, now=NOW, old_after=730)
    assert (bulk.count, bulk.first, bulk.last) == (tables.count, tables.first, tables.last)
    assert bulk.day_numbers == tables.day_numbers
    assert (bulk.future, bulk.very_old) == (tables.future, tables.very_old)
    assert bulk.per_event == tables.per_event
    assert bulk.totals == tables.totals
