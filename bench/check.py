"""Read + validate + encode throughput on a 1M-row Parquet file.

Run by hand: ``.venv/bin/python -m bench.check [--rows N]``. Compares the importer's
vectorized pipeline — plain, and with two row filters and a cell extraction — with the
naive per-row f-string + ``quote`` loop, in the same run. Rates are rows read per second.
Target: the pipeline at >= 500,000 rows/s on the project's 2-core machine, either way.
"""

from __future__ import annotations

import argparse
from decimal import Decimal
from urllib.parse import quote

import pyarrow.parquet as pq

from bench.common import FILTERED_SCHEMA, SCHEMA, best_of, make_parquet
from importer import api


def pipeline(path: str, schema: dict[str, object] = SCHEMA) -> int:
    """The importer: read, filter, validate, map and encode every row; rows read."""
    count = 0
    for mapped in api.iter_events(path, schema=schema, now=1_800_000_000):
        count += mapped.batch.num_rows
    return count


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


if __name__ == "__main__":
    main()
