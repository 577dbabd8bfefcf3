"""The public entry points, wiring the stages: source → mapping → (ledger → sender) → report.

The CLI and notebooks call these and nothing else, so both take the same path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from importer.errors import UsageError
from importer.ledger import MemoryLedger
from importer.mapping import Mapped, Mapper
from importer.pipeline import mapped_batches
from importer.progress import NullProgress, Progress
from importer.report import RejectsWriter, Report
from importer.run import Control, RunSettings, deliver
from importer.schema import Schema, load_schema
from importer.sender import SendOptions
from importer.source import DEFAULT_BATCH_SIZE, Source, open_source

SchemaLike = str | Path | dict[str, Any] | Schema


def prepare(source: Any, schema: SchemaLike) -> tuple[Source, Schema]:
    """Load the schema and open the source, checking its columns before anything is read."""
    loaded = load_schema(schema)
    opened = open_source(source, csv_options=loaded.csv)
    opened.require(loaded.columns())
    return opened, loaded


def schema_name(schema: SchemaLike) -> str:
    """How reports name a schema."""
    return str(schema) if isinstance(schema, str | Path) else "<schema>"


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


def _send_options(options: SendOptions | None, tunables: dict[str, Any]) -> SendOptions:
    try:
        return dataclasses.replace(options or SendOptions(), **tunables)
    except TypeError as exc:
        known = ", ".join(f.name for f in dataclasses.fields(SendOptions))
        raise UsageError(f"{exc}; send options are: {known}") from None


async def send_async(
    source: Any,
    /,
    *,
    schema: SchemaLike,
    endpoint: str | None = None,
    sandbox: bool = False,
    options: SendOptions | None = None,
    rejects: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    control: Control | None = None,
    now: float | None = None,
    **tunables: Any,
) -> Report:
    """Validate, map and deliver every row; the native async form of :func:`send`.

    Args:
        source: a path, a list of paths, a DataFrame, an Arrow table or stream.
        schema: a schema file path, a dict, or a :class:`~importer.schema.Schema`.
        endpoint: override the schema's endpoint template (e.g. a collector's URL).
        sandbox: start a local collector and send there instead.
        options: a :class:`~importer.sender.SendOptions`; keyword tunables such as
            ``concurrency=64`` or ``rate=100`` override its fields.
        rejects: write every broken rule to this .csv or .parquet file.
        batch_size: rows per batch.
        progress: where to report progress (nothing is shown by default).
        control: lets another thread stop the run (``send`` uses it for Ctrl-C).
        now: the current epoch time for the future/age checks.

    Returns:
        The :class:`~importer.report.Report`; its accounting line always holds.
    """
    settings = RunSettings(
        options=_send_options(options, tunables), batch_size=batch_size, sandbox=sandbox,
        progress=progress or NullProgress(), control=control or Control(),
    )
    opened, loaded = prepare(source, schema)
    settings.rejects = RejectsWriter(rejects) if rejects is not None else None
    mapper = Mapper(loaded, endpoint=endpoint, now=now)
    report = Report("send", source=opened.name, schema=schema_name(schema))
    ledger = MemoryLedger()
    await deliver(opened, mapper, ledger, report, settings)
    return report


def send(source: Any, /, **kwargs: Any) -> Report:
    """Validate, map and deliver every row; works in scripts and inside a running loop.

    Takes the arguments of :func:`send_async`. The run happens in a worker thread with its own
    event loop, so it works the same in a plain script and in Jupyter (whose loop is already
    running). Ctrl-C (KeyboardInterrupt) stops it gracefully: in-flight requests drain and the
    report says how to resume; a second Ctrl-C stops it at once.
    """
    control = kwargs.pop("control", None) or Control()
    result: list[Report] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(asyncio.run(send_async(source, control=control, **kwargs)))
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    thread = threading.Thread(target=work, name="event-backfill-send", daemon=True)
    thread.start()
    while thread.is_alive():
        try:
            thread.join(0.1)
        except KeyboardInterrupt:
            control.request_stop()
    if failure:
        raise failure[0]
    return result[0]
