"""Shared helpers for the benchmarks: data generation and timing."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parent / "out"

SCHEMA = {
    "project_id": {"value": "1234567"},
    "account_id": {"value": "8511325"},
    "user_id": {"column": "customer_id"},
    "event_name": {"column": "event"},
    "experiments": [{"experiment_column": "experiment_id", "variation_column": "variation_id"}],
    "goal_ids": {"column": "goal_ids"},
    "value": {"column": "amount", "scale": 100},
    "time": {"column": "ordered_at"},
    "segments": [{"id": "983745985", "column": "channel"}],
    "dedupe_key": ["order_id"],
}


# The same with what real exports need: two row filters and a cell extraction.
FILTERED_SCHEMA = {
    **SCHEMA,
    "filter": [
        {"column": "status", "in": ["Paid"]},
        {"column": "channel", "not_in": ["phone & mail"]},
    ],
    "segments": [{"id": "983745985", "column": "note", "extract": r"source=(\w+)"}],
}


def make_parquet(rows: int, path: Path | None = None, *, seed: int = 7) -> Path:
    """A warehouse-like extract: int ids, decimal amounts, UTC timestamps, text names.

    Also a payment status (Paid / Failed / Refunded) and a free-text note holding the
    source inside other text, for the filter and extract benchmark.
    """
    path = path or OUT / f"sales_v2_{rows}.parquet"
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    chunk = 1_000_000
    writer = None
    start = 1_700_000_000
    for offset in range(0, rows, chunk):
        n = min(chunk, rows - offset)
        cents = rng.integers(100, 500_000, n)
        table = pa.table(
            {
                "order_id": pa.array(np.arange(offset, offset + n) + 10_000_000, pa.int64()),
                "customer_id": pa.array([f"C{c:07d}" for c in rng.integers(0, 300_000, n)]),
                "event": pa.array(rng.choice(["purchase", "refund request", "store_visit"], n)),
                "experiment_id": pa.array(rng.choice([87654321, 987654321], n), pa.int64()),
                "variation_id": pa.array(rng.choice(["1111111", "2222222_3333333"], n)),
                "goal_ids": pa.array(rng.choice(["1234567", "12345,4324234"], n)),
                "amount": pa.array([f"{c // 100}.{c % 100:02d}" for c in cents.tolist()]),
                "ordered_at": pa.array(
                    start + rng.integers(0, 30_000_000, n), pa.timestamp("s", tz="UTC")
                ),
                "channel": pa.array(rng.choice(["gc", "store", "phone & mail"], n)),
                "status": pa.array(rng.choice(["Paid"] * 8 + ["Failed", "Refunded"], n)),
                "note": pa.array(
                    [
                        f"gift: no; source={s}; ref {r}"
                        for s, r in zip(
                            rng.choice(["web", "email", "ads"], n).tolist(),
                            rng.integers(0, 1000, n).tolist(),
                            strict=True,
                        )
                    ]
                ),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=256 * 1024)
    assert writer is not None
    writer.close()
    return path


def best_of(runs: int, action: Callable[[], int]) -> tuple[float, int]:
    """The fastest of several timed runs: (seconds, items)."""
    best = float("inf")
    items = 0
    for _ in range(runs):
        started = time.perf_counter()
        items = action()
        best = min(best, time.perf_counter() - started)
    return best, items
