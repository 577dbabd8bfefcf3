"""The public entry points, wiring the stages: source → mapping → (ledger → sender) → report.

The CLI and notebooks call these and nothing else, so both take the same path.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from importer.mapping import Mapped, Mapper
from importer.progress import NullProgress, Progress
from importer.report import RejectsWriter, Report
from importer.schema import Schema, load_schema
from importer.source import DEFAULT_BATCH_SIZE, Settled, Source, open_source

SchemaLike = str | Path | dict[str, Any] | Schema
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


def prepare(source: Any, schema: SchemaLike) -> tuple[Source, Schema]:
    """Load the schema and open the source, checking its columns before anything is read."""
    loaded = load_schema(schema)
    opened = open_source(source, csv_options=loaded.csv)
    opened.require(loaded.columns())
    return opened, loaded


def schema_name(schema: SchemaLike) -> str:
    """How reports name a schema."""
    return str(schema) if isinstance(schema, str | Path) else "<schema>"


def mapped_batches(
    source: Source,
    mapper: Mapper,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    settled: Settled | None = None,
    workers: int = DEFAULT_WORKERS,
) -> Iterator[Mapped]:
    """Read and map batches in order, mapping up to ``workers`` batches at once.

    Arrow's kernels release the GIL, so mapping in threads uses every core while this
    thread reads ahead. At most ``workers + 1`` batches are held at a time.
    """
    batches = source.batches(mapper.schema.columns(), batch_size=batch_size, settled=settled)
    if workers <= 1:
        for batch in batches:
            yield mapper.map(batch)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="map") as pool:
        pending: deque[Future[Mapped]] = deque()
        try:
            for batch in batches:
                pending.append(pool.submit(mapper.map, batch))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def check(
    source: Any,
    /,
    *,
    schema: SchemaLike,
    rejects: str | Path | None = None,
    endpoint: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    now: float | None = None,
) -> Report:
    """Validate every row and summarise what ``send`` would do, sending nothing.

    Args:
        source: a path, a list of paths, a DataFrame, an Arrow table or stream.
        schema: a schema file path, a dict, or a :class:`~importer.schema.Schema`.
        rejects: write every broken rule to this .csv or .parquet file.
        endpoint: override the schema's endpoint template for the sample URLs.
        batch_size: rows per batch.
        progress: where to report progress (nothing is shown by default).
        now: the current epoch time for the future/age checks (tests pin it).

    Returns:
        A :class:`~importer.report.Report`; ``report.rejects`` is a DataFrame.
    """
    opened, loaded = prepare(source, schema)
    mapper = Mapper(loaded, endpoint=endpoint, now=now)
    report = Report("check", source=opened.name, schema=schema_name(schema))
    writer = RejectsWriter(rejects) if rejects is not None else None
    bar = progress or NullProgress()
    bar.start(opened.total_rows(), "rows")
    try:
        for mapped in mapped_batches(opened, mapper, batch_size=batch_size):
            report.add_mapped(mapped)
            report.stats.add_table(mapped.events, now=mapper.now,
                                   old_after=loaded.checks.old_after_days)
            if writer is not None:
                writer.write(mapped.rejects)
            bar.advance(mapped.batch.num_rows, valid=report.valid, rejected=report.rejected)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
            report.rejects_path = str(rejects)
    return report


def iter_events(
    source: Any,
    /,
    *,
    schema: SchemaLike,
    endpoint: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    now: float | None = None,
) -> Iterator[Mapped]:
    """Mapped batches of a source: the events ``send`` would make, and the rejects."""
    opened, loaded = prepare(source, schema)
    mapper = Mapper(loaded, endpoint=endpoint, now=now)
    yield from mapped_batches(opened, mapper, batch_size=batch_size)


def preview(
    source: Any,
    /,
    *,
    schema: SchemaLike,
    n: int | None = 20,
    endpoint: str | None = None,
    now: float | None = None,
) -> pd.DataFrame:
    """The requests ``send`` would make, as a DataFrame of parameters and URL.

    Args:
        source: a path, a list of paths, a DataFrame, an Arrow table or stream.
        schema: a schema file path, a dict, or a :class:`~importer.schema.Schema`.
        n: at most this many events (None for all of them).
        endpoint: override the schema's endpoint template.
        now: the current epoch time for the future/age checks.

    Returns:
        One row per valid input row: position, file, row, line, a, n, u, x, v, g, d, s,
        time, url. Rejected rows are left out (``check`` explains them).
    """
    tables: list[pa.Table] = []
    count = 0
    for mapped in iter_events(source, schema=schema, endpoint=endpoint, now=now):
        events = mapped.events
        if n is not None:
            events = events.slice(0, n - count)
        tables.append(events)
        count += events.num_rows
        if n is not None and count >= n:
            break
    if not tables:
        from importer.mapping import _empty_events

        return _empty_events().to_pandas()
    return pa.concat_tables(tables).to_pandas()
