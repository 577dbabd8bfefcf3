"""Read + validate + encode throughput on a 1M-row Parquet file.

Run by hand: ``.venv/bin/python -m bench.check [--rows N] [--datafile]``. Compares the
importer's vectorized pipeline — plain, and with two row filters and a cell extraction — with
the naive per-row f-string + ``quote`` loop, in the same run. Rates are rows read per second.
Target: the pipeline at >= 500,000 rows/s on the project's 2-core machine, either way.

``--datafile`` adds a generated project (200 experiments, 1,000 events, a few paused) and a
file of its ids and keys (some unknown, some goals not attached to the row's experiment):
the pipeline on that file without the datafile, with it (ids judged), and with keys resolved
through it. The same >= 500,000 rows/s target holds with the datafile.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.common import FILTERED_SCHEMA, OUT, SCHEMA, best_of, make_parquet
from importer import api
from importer.datafile import Datafile, load_datafile

EXPERIMENTS, EVENTS = 200, 1_000
# The datafile file's schema by keys: experiment, variation and event named by key.
KEYS_SCHEMA: dict[str, Any] = {
    **SCHEMA,
    "experiments": [
        {"experiment_key_column": "experiment_key", "variation_key_column": "variation_key"}
    ],
    "goal_ids": {"event_key_column": "event_key"},
}


def pipeline(
    path: str,
    schema: dict[str, object] = SCHEMA,
    datafile: Datafile | None = None,
    found: Counter[str] | None = None,
) -> int:
    """The importer: read, filter, validate, map and encode every row; rows read.

    ``found``: counts of each reject rule and warning, when given.
    """
    count = 0
    for mapped in api.iter_events(path, schema=schema, now=1_800_000_000, datafile=datafile):
        count += mapped.batch.num_rows
        if found is not None:
            found.update(mapped.rejects.column("rule").to_pylist())
            found.update(f"warn:{r}" for r in mapped.warnings.column("rule").to_pylist())
    return count


def make_datafile(path: Path | None = None, *, seed: int = 11) -> Path:
    """A project of EXPERIMENTS experiments (2-4 variations, 1 in 20 paused) and EVENTS
    events, event j attached to experiments j % EXPERIMENTS and (7j) % EXPERIMENTS."""
    path = path or OUT / f"datafile_{EXPERIMENTS}x{EVENTS}.json"
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, 5, EXPERIMENTS)
    experiments = [
        {
            "id": str(100_000_000 + i),
            "key": f"exp_{i}",
            "status": "Paused" if i % 20 == 19 else "Running",
            "variations": [
                {"id": str(200_000_000 + 10 * i + v), "key": f"v{v}"} for v in range(counts[i])
            ],
        }
        for i in range(EXPERIMENTS)
    ]
    events = [
        {
            "id": str(5_000_000 + j),
            "key": f"event_{j}",
            "experimentIds": sorted(
                {str(100_000_000 + j % EXPERIMENTS), str(100_000_000 + (7 * j) % EXPERIMENTS)}
            ),
        }
        for j in range(EVENTS)
    ]
    data = {
        "version": "4",
        "projectId": "1234567",
        "accountId": "8511325",
        "revision": "1",
        "experiments": experiments,
        "events": events,
        "attributes": [{"id": "983745985", "key": "channel"}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def make_datafile_parquet(rows: int, datafile: Path, *, seed: int = 13) -> Path:
    """The bench's sales file with the generated project's ids and keys: 0.5% unknown
    experiments, 1% variations of another experiment, 10% goals chosen at random (mostly not
    attached to the row's experiment), 0.5% unknown goals, 30% of rows with two goals."""
    path = OUT / f"sales_datafile_{rows}.parquet"
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path
    project = json.loads(datafile.read_text())
    counts = np.array([len(e["variations"]) for e in project["experiments"]])
    base = pq.read_table(make_parquet(rows))
    rng = np.random.default_rng(seed)
    exp = rng.integers(0, EXPERIMENTS, rows)
    var = (rng.random(rows) * counts[exp]).astype(np.int64)
    other = rng.random(rows) < 0.01  # a variation of the next experiment
    owner = np.where(other, (exp + 1) % EXPERIMENTS, exp)
    var = np.minimum(var, counts[owner] - 1)
    unknown_exp = rng.random(rows) < 0.005
    goal = exp + EXPERIMENTS * rng.integers(0, EVENTS // EXPERIMENTS, rows)  # attached
    goal = np.where(rng.random(rows) < 0.1, rng.integers(0, EVENTS, rows), goal)
    second = (goal + EXPERIMENTS) % EVENTS
    goal_ids = pc.cast(pa.array(5_000_000 + goal), pa.string())
    two = pc.binary_join_element_wise(
        goal_ids, pc.cast(pa.array(5_000_000 + second), pa.string()), ","
    )
    goal_ids = pc.if_else(pa.array(rng.random(rows) < 0.3), two, goal_ids)
    goal_ids = pc.if_else(pa.array(rng.random(rows) < 0.005), "9999999", goal_ids)
    exp_ids = np.where(unknown_exp, 999_000_000 + exp, 100_000_000 + exp)
    table = (
        base.set_column(
            base.schema.get_field_index("experiment_id"),
            "experiment_id",
            pa.array(exp_ids, pa.int64()),
        )
        .set_column(
            base.schema.get_field_index("variation_id"),
            "variation_id",
            pc.cast(pa.array(200_000_000 + 10 * owner + var), pa.string()),
        )
        .set_column(base.schema.get_field_index("goal_ids"), "goal_ids", goal_ids)
        .append_column("experiment_key", _texts("exp_", np.where(unknown_exp, exp + 1000, exp)))
        .append_column("variation_key", _texts("v", var))
        .append_column("event_key", _texts("event_", goal))
    )
    pq.write_table(table, path, row_group_size=256 * 1024)
    return path


def _texts(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def naive(path: str) -> int:
    """What a quick script does: a Python loop building each URL with an f-string."""
    count = 0
    for batch in pq.ParquetFile(path).iter_batches(65_536):
        for r in batch.to_pylist():
            value = int(Decimal(r["amount"]) * 100)
            url = (
                f"https://1234567.log.optimizely.com/event?a=1234567&n={quote(r['event'], safe='')}"
                f"&u={quote(r['customer_id'], safe='')}&x{r['experiment_id']}={r['variation_id']}"
                f"&v={value}&g={r['goal_ids']}&d=8511325&s983745985={quote(r['channel'], safe='')}"
                f"&time={int(r['ordered_at'].timestamp())}"
            )
            count += len(url) > 0
    return batch_rows(path)


def batch_rows(path: str) -> int:
    return int(pq.ParquetFile(path).metadata.num_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--datafile", action="store_true", help="also judge a file against a generated datafile"
    )
    args = parser.parse_args()
    path = str(make_parquet(args.rows))
    ours, n_ours = best_of(args.runs, lambda: pipeline(path))
    filt, n_filt = best_of(args.runs, lambda: pipeline(path, FILTERED_SCHEMA))
    ref, n_ref = best_of(1, lambda: naive(path))
    print(f"rows: {args.rows:,}")
    print(f"importer pipeline        : {n_ours / ours:>12,.0f} rows/s  ({ours:.2f} s)")
    print(f"  + 2 filters, 1 extract : {n_filt / filt:>12,.0f} rows/s  ({filt:.2f} s)")
    print(f"per-row f-string         : {n_ref / ref:>12,.0f} rows/s  ({ref:.2f} s)")
    print(f"ratio pipeline / per-row: {ref / ours:.1f}x; with filters: {ref / filt:.1f}x")
    if args.datafile:
        with_datafile(args.rows, args.runs, ours=args.rows / ours)


def with_datafile(rows: int, runs: int, *, ours: float) -> None:
    """The plain pipeline, and on the datafile file: without it, judged against it, by keys.

    Measured in interleaved rounds (best of ``runs`` each), so a busy machine slows each
    alike and the ratios stay fair.
    """
    source = make_datafile()
    loaded = load_datafile(source)
    plain_path = str(make_parquet(rows))
    path = str(make_datafile_parquet(rows, source))
    actions = {
        "plain check (the file above)": lambda: pipeline(plain_path),
        "that file, no datafile": lambda: pipeline(path),
        "--datafile, ids": lambda: pipeline(path, SCHEMA, loaded),
        "--datafile, keys": lambda: pipeline(path, KEYS_SCHEMA, loaded),
    }
    best = dict.fromkeys(actions, float("inf"))
    for _ in range(runs):
        for name, action in actions.items():
            seconds, _ = best_of(1, action)
            best[name] = min(best[name], seconds)
    found: Counter[str] = Counter()
    pipeline(path, SCHEMA, loaded, found)
    print(f"datafile: {EXPERIMENTS} experiments, {EVENTS:,} events ({source.name}); rounds:")
    for name, seconds in best.items():
        print(f"  {name:<28}: {rows / seconds:>12,.0f} rows/s  ({seconds:.2f} s)")
    ratio = best["plain check (the file above)"] / best["--datafile, ids"]
    print(f"  --datafile, ids / plain check: {ratio:.2f}x (first plain measure: {ours:,.0f}/s)")
    shown = ", ".join(f"{rule} {n:,}" for rule, n in sorted(found.items()))
    print(f"  found (ids): {shown}")


if __name__ == "__main__":
    main()
