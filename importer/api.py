"""The public entry points, wiring the stages: source → mapping → (ledger → sender) → report.

The CLI and notebooks call these and nothing else, so both take the same path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from importer import html_report
from importer import ledger as ledgers
from importer import loop as loops
from importer.canary import Canary
from importer.canary import choose as canary_rows
from importer.collector import Collector
from importer.collector import Faults as Faults  # the CLI's one door is this module
from importer.collector import serve as serve
from importer.datafile import Datafile, DatafileLike
from importer.datafile import load_datafile as load_datafile  # the CLI loads it once
from importer.errors import UsageError
from importer.html_data import ReceiptLike
from importer.ledger import SANDBOX, MemoryLedger, Receipt, RunKey, SqliteLedger, Unknown
from importer.mapping import Mapped, Mapper, as_text
from importer.options import DEFAULT_LEDGER, LedgerPath, SendOptions, ledger_path
from importer.outputs import RejectedRowsWriter, RejectsWriter, write_table
from importer.pipeline import Settled, mapped_batches
from importer.preflight import Template, check_host, is_loopback, parse_template, preflight
from importer.progress import ProgressLike, choose
from importer.report import Report, gate_banner, resume_lines
from importer.resend import retry_async as _retry_async
from importer.run import DEFAULT_SEND_BATCH_SIZE, RunSettings, deliver, source_feed
from importer.run import Control as Control
from importer.schema import CsvOptions, Schema, load_schema
from importer.source import DEFAULT_BATCH_SIZE, Source, open_source
from importer.tables import empty_events
from importer.times import window_bound

if TYPE_CHECKING:
    import pandas as pd

SchemaLike = str | Path | dict[str, Any] | Schema
TimeBound = str | date | datetime | int | None


def prepare(
    source: Any, schema: SchemaLike, csv: dict[str, str] | None = None
) -> tuple[Source, Schema]:
    """Load the schema and open the source, checking its columns before anything is read.

    ``csv``: overrides of the schema's ``[csv]`` table (the CLI's --delimiter, --encoding).
    """
    loaded = load_schema(schema)
    if csv:
        try:
            options = CsvOptions(**{**loaded.csv.model_dump(), **csv})
        except ValueError as exc:
            raise UsageError(f"--delimiter/--encoding: {exc}") from None
        loaded = loaded.model_copy(update={"csv": options})
    opened = open_source(source, csv_options=loaded.csv)
    opened.require(loaded.columns())
    return opened, loaded


def prepare_mapped(
    source: Any,
    schema: SchemaLike,
    csv: dict[str, str] | None,
    *,
    endpoint: str | None,
    since: TimeBound,
    until: TimeBound,
    now: float | None,
    datafile: DatafileLike | None = None,
) -> tuple[Source, Schema, Mapper]:
    """:func:`prepare`, and the mapper of that schema: what check, preview and send share.

    ``datafile``: the project's datafile (a path, URL, dict or loaded
    :class:`~importer.datafile.Datafile`): ids are checked against it, keys resolved.
    """
    opened, loaded = prepare(source, schema, csv)
    mapper = make_mapper(
        loaded,
        endpoint=endpoint,
        now=now,
        since=since,
        until=until,
        origin=schema_name(schema),
        datafile=load_datafile(datafile) if datafile is not None else None,
    )
    return opened, loaded, mapper


def schema_name(schema: SchemaLike) -> str:
    """How reports name a schema."""
    return str(schema) if isinstance(schema, str | Path) else "<schema>"


def make_mapper(
    schema: Schema,
    *,
    endpoint: str | None = None,
    now: float | None = None,
    since: TimeBound = None,
    until: TimeBound = None,
    origin: str = "schema",
    datafile: Datafile | None = None,
) -> Mapper:
    """A mapper for one run, with the --since/--until window checked."""
    try:
        low, high = window_bound(since, end=False), window_bound(until, end=True)
    except ValueError as exc:
        raise UsageError(f"--since/--until: {exc}") from None
    if low is not None and high is not None and low >= high:
        raise UsageError("--since must be before --until: no event could be sent")
    parse_template(endpoint or schema.endpoint)  # a wrong endpoint fails before any read
    return Mapper(
        schema,
        endpoint=endpoint,
        now=now,
        since=low,
        until=high,
        origin=origin,
        datafile=datafile,
    )


def datafile_lines(report: Report, mapper: Mapper) -> None:
    """With a datafile: which one (its revision) in the notes, and its warnings, counted."""
    if mapper.datafile is not None:
        known = mapper.datafile
        report.notes.append(known.describe())
        report.warnings += mapper.warned.lines()
        report.warned_by_rule = dict(mapper.warned.counts)
        report.datafile = {
            "source": known.source,
            "revision": known.revision,
            "project_id": known.project_id,
            "account_id": known.account_id,
        }


@dataclass(frozen=True)
class Destination:
    """Where a run's requests go: the endpoint template, its hosts and project ids."""

    template: Template
    project_ids: tuple[str, ...]
    hosts: tuple[str, ...]

    @property
    def production(self) -> bool:
        """Whether any host is not loopback (a real endpoint: sending needs confirmation)."""
        return any(not is_loopback(host) for host in self.hosts)


def destination_of(source: Source, schema: Schema, endpoint: str) -> Destination:
    """The hosts a run would send to (project ids read from their column when needed)."""
    template = parse_template(endpoint)
    spec = schema.project_id
    ids: list[str] = []
    if spec.value is not None:
        ids = [spec.value]
    elif template.per_project:
        assert spec.column is not None
        seen: dict[str, None] = {}
        for batch in source.batches([spec.column]):
            if batch.data is not None:
                for value in pc.unique(as_text(batch.data.column(0))).to_pylist():
                    if value and value.isascii() and value.isdigit():
                        seen[value] = None
        ids = list(seen)
    hosts = [template.host_for(i) for i in ids] if template.per_project else []
    hosts = list(dict.fromkeys(hosts or [template.host_pattern]))
    for host in hosts:
        check_host(host)
    return Destination(template, tuple(ids), tuple(hosts))


def production_summary(
    source: Any,
    /,
    *,
    schema: SchemaLike,
    csv: dict[str, str] | None = None,
    endpoint: str | None = None,
    since: TimeBound = None,
    until: TimeBound = None,
    ledger: LedgerPath | None = DEFAULT_LEDGER,
    datafile: DatafileLike | None = None,
) -> str | None:
    """What a send to a real (not loopback) endpoint would do, for a confirmation; None when
    every host is loopback. Reads the input once (as ``check`` does), sends nothing."""
    opened, loaded = prepare(source, schema, csv)
    where = destination_of(opened, loaded, endpoint or loaded.endpoint)
    if not where.production:
        return None
    report = check(
        source,
        schema=schema,
        csv=csv,
        endpoint=endpoint,
        since=since,
        until=until,
        datafile=datafile,
    )
    path = ledger_path(ledger) if ledger is not None else None
    return gate_banner(report, where.hosts, where.project_ids, path)


def check_output(path: str | Path | None, what: str) -> None:
    """Refuse an output path whose folder is missing or not writable, before any work."""
    if path is None:
        return
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise UsageError(f"{what} {target} is a directory: give a file name")
    if not folder.is_dir():
        raise UsageError(
            f"{what} {target}: the folder {folder} does not exist; create it or choose another path"
        )
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise UsageError(f"{what} {target}: not writable here; choose another path")


def check_report_html(path: str | Path | None) -> None:
    """Refuse ``--report`` before any work: the ``report`` extra missing, or a path that
    cannot be written."""
    if path is not None:
        html_report.require("--report")
        check_output(path, "--report")


def all_columns(source: Source) -> list[str]:
    """The columns every input has, in the first input's order (for --rejects-rows)."""
    first, *others = [item.columns() for item in source.inputs]
    return [c for c in first if all(c in have for have in others)]


def rows_writer(
    path: str | Path | None, source: Source, schema: Schema
) -> tuple[RejectedRowsWriter | None, list[str] | None]:
    """The --rejects-rows writer, and the columns to read so it can write whole rows."""
    if path is None:
        return None, None
    columns = all_columns(source)
    columns += [c for c in schema.columns() if c not in columns]
    options = schema.csv
    first = source.inputs[0]
    if options.delimiter == "auto" and hasattr(first, "header"):  # as the input was read
        options = options.model_copy(update={"delimiter": first.header()[1]})
    return RejectedRowsWriter(path, columns, options), columns


def scale_warnings(source: Source, schema: Schema) -> list[str]:
    """Warn when value.scale is set but a column looks like ISO 4217 currency codes."""
    spec = schema.value
    if spec is None or spec.scale is None:
        return []
    from importer.currencies import MINOR_UNITS

    columns = all_columns(source)
    batch = next(iter(source.batches(columns, batch_size=1000)), None)
    if batch is None or batch.data is None:
        return []
    out = []
    for name in columns:
        cells = [str(v).strip().upper() for v in batch.data.column(name).to_pylist() if v]
        cells = [c for c in cells if c]
        if cells and sum(c in MINOR_UNITS for c in cells) >= 0.9 * len(cells):
            seen = ", ".join(sorted(set(cells))[:6])
            out.append(
                f"column {name!r} looks like ISO 4217 currency codes ({seen}), but "
                f"value.scale = {spec.scale} scales every amount alike: JPY has no minor unit, "
                f"KWD has three. Use value.currency_column = {name!r} instead of scale."
            )
    return out


def check(
    source: Any,
    /,
    *,
    schema: SchemaLike,
    csv: dict[str, str] | None = None,
    rejects: str | Path | None = None,
    rejects_rows: str | Path | None = None,
    endpoint: str | None = None,
    since: TimeBound = None,
    until: TimeBound = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressLike = None,
    now: float | None = None,
    datafile: DatafileLike | None = None,
) -> Report:
    """Validate every row and summarise what ``send`` would do, sending nothing.

    Args:
        source: a path, a list of paths, a DataFrame, an Arrow table or stream.
        schema: a schema file path, a dict, or a :class:`~importer.schema.Schema`.
        rejects: write every broken rule to this .csv or .parquet file.
        rejects_rows: write each rejected row as read (every column) plus its rules and
            messages to this .csv file, to fix and import again with the same schema.
        endpoint: override the schema's endpoint template for the sample URLs.
        since, until: only events in this time window (ISO date or datetime, UTC unless
            it has an offset; a date alone is a whole day); the others count as filtered.
        batch_size: rows per batch.
        progress: None (a bar in notebooks, nothing in scripts), True, False, or a
            :class:`~importer.progress.Progress`.
        now: the current epoch time for the future/age checks (tests pin it).
        datafile: the project's datafile (a path, an http(s) URL, a dict or a loaded
            :class:`~importer.datafile.Datafile`): ids it does not have are rejected
            (project-mismatch, experiment-unknown...), keys are resolved through it.

    Returns:
        A :class:`~importer.report.Report`; ``report.rejects`` is a DataFrame.
    """
    return _check(
        "check",
        source,
        schema=schema,
        csv=csv,
        rejects=rejects,
        rejects_rows=rejects_rows,
        endpoint=endpoint,
        since=since,
        until=until,
        batch_size=batch_size,
        progress=progress,
        now=now,
        datafile=datafile,
    )


def write_requests(
    source: Any,
    /,
    out: IO[str],
    *,
    schema: SchemaLike,
    csv: dict[str, str] | None = None,
    n: int | None = None,
    rejects: str | Path | None = None,
    rejects_rows: str | Path | None = None,
    endpoint: str | None = None,
    since: TimeBound = None,
    until: TimeBound = None,
    progress: ProgressLike = None,
    now: float | None = None,
    datafile: DatafileLike | None = None,
) -> Report:
    """Write the URLs ``send`` would request, one per line, to ``out``; sends nothing.

    Takes the arguments of :func:`check`, plus ``n``: stop after this many requests (the
    report then counts only the rows read so far). Returns a "preview" report whose
    ``requests_written`` says how many lines were written.
    """
    return _check(
        "preview",
        source,
        schema=schema,
        csv=csv,
        rejects=rejects,
        rejects_rows=rejects_rows,
        endpoint=endpoint,
        since=since,
        until=until,
        batch_size=DEFAULT_BATCH_SIZE,
        progress=progress,
        now=now,
        requests=out,
        limit=n,
        datafile=datafile,
    )


def _check(
    command: str,
    source: Any,
    /,
    *,
    schema: SchemaLike,
    csv: dict[str, str] | None,
    rejects: str | Path | None,
    rejects_rows: str | Path | None,
    endpoint: str | None,
    since: TimeBound,
    until: TimeBound,
    batch_size: int,
    progress: ProgressLike,
    now: float | None,
    requests: IO[str] | None = None,
    limit: int | None = None,
    datafile: DatafileLike | None = None,
) -> Report:
    check_output(rejects, "--rejects")
    check_output(rejects_rows, "--rejects-rows")
    opened, loaded, mapper = prepare_mapped(
        source,
        schema,
        csv,
        endpoint=endpoint,
        since=since,
        until=until,
        now=now,
        datafile=datafile,
    )
    report = Report(command, source=opened.name, schema=schema_name(schema))
    report.source_index = opened.index
    report.warnings += scale_warnings(opened, loaded)
    writer = RejectsWriter(rejects) if rejects is not None else None
    row_writer, columns = rows_writer(rejects_rows, opened, loaded)
    bar = choose(progress)
    bar.start(opened.total_rows(), "rows")
    try:
        for mapped in mapped_batches(opened, mapper, batch_size=batch_size, columns=columns):
            report.add_mapped(mapped)
            report.stats.add_table(
                mapped.events, now=mapper.now, old_after=loaded.checks.old_after_days
            )
            if writer is not None:
                writer.write(mapped.rejects)
            if row_writer is not None:
                row_writer.write(mapped)
            bar.advance(mapped.batch.num_rows, valid=report.valid, rejected=report.rejected)
            if requests is not None:
                urls = mapped.events.column("url").to_pylist()
                if limit is not None:
                    urls = urls[: max(0, limit - report.requests_written)]
                if urls:
                    requests.write("\n".join(urls) + "\n")
                report.requests_written += len(urls)
                if limit is not None and report.requests_written >= limit:
                    break
    finally:
        bar.close()
        if writer is not None:
            writer.close()
            report.rejects_path = str(rejects)
        if row_writer is not None:
            row_writer.close()
            report.rejects_rows_path = str(rejects_rows)
    datafile_lines(report, mapper)
    return report


def iter_events(
    source: Any,
    /,
    *,
    schema: SchemaLike,
    csv: dict[str, str] | None = None,
    endpoint: str | None = None,
    since: TimeBound = None,
    until: TimeBound = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    now: float | None = None,
    datafile: DatafileLike | None = None,
) -> Iterator[Mapped]:
    """Mapped batches of a source: the events ``send`` would make, and the rejects (and,
    with a datafile, each batch's ``warnings``)."""
    opened, _, mapper = prepare_mapped(
        source,
        schema,
        csv,
        endpoint=endpoint,
        since=since,
        until=until,
        now=now,
        datafile=datafile,
    )
    yield from mapped_batches(opened, mapper, batch_size=batch_size)


def preview(
    source: Any,
    /,
    *,
    schema: SchemaLike,
    csv: dict[str, str] | None = None,
    n: int | None = 20,
    endpoint: str | None = None,
    since: TimeBound = None,
    until: TimeBound = None,
    now: float | None = None,
    datafile: DatafileLike | None = None,
) -> pd.DataFrame:
    """The requests ``send`` would make, as a DataFrame of parameters and URL.

    Args:
        source: a path, a list of paths, a DataFrame, an Arrow table or stream.
        schema: a schema file path, a dict, or a :class:`~importer.schema.Schema`.
        n: at most this many events (None for all of them).
        endpoint: override the schema's endpoint template.
        since, until: only events in this time window (as for :func:`check`).
        now: the current epoch time for the future/age checks.
        datafile: the project's datafile (as for :func:`check`).

    Returns:
        One row per valid input row: position, file, row, line, a, n, u, x, v, g, d, s,
        time, currency, url. Rejected and filtered rows are left out (``check`` explains
        them).
    """
    tables: list[pa.Table] = []
    count = 0
    for mapped in iter_events(
        source,
        schema=schema,
        csv=csv,
        endpoint=endpoint,
        since=since,
        until=until,
        now=now,
        datafile=datafile,
    ):
        events = mapped.events
        if n is not None:
            events = events.slice(0, n - count)
        tables.append(events)
        count += events.num_rows
        if n is not None and count >= n:
            break
    table = pa.concat_tables(tables) if tables else empty_events()
    frame: pd.DataFrame = table.to_pandas()
    return frame


def guess_schema(
    source: Any,
    /,
    *,
    sample_rows: int = 2000,
    schema_path: str | Path | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
    datafile: DatafileLike | None = None,
) -> Any:
    """Guess a commented schema for a file from its header and a sample of its rows.

    What ``event-backfill init`` writes. With the project's ``datafile``, columns of
    experiment, variation and event keys and attribute columns are recognised, and the
    project and account ids come from it.

    Returns:
        An :class:`importer.init.Guess`: ``text`` (the TOML), ``todos`` (keys left to fill
        in) and ``notes`` (what was found).
    """
    from importer import init

    where = str(schema_path) if schema_path is not None else "schema.toml"
    options = None
    if delimiter is not None or encoding is not None:
        options = CsvOptions(delimiter=delimiter or "auto", encoding=encoding or "utf-8")
    return init.guess_schema(
        source,
        sample_rows=sample_rows,
        schema_path=where,
        csv_options=options,
        datafile=load_datafile(datafile) if datafile is not None else None,
    )


def _send_options(options: SendOptions | None, tunables: dict[str, Any]) -> SendOptions:
    if tunables.get("dask") is not None:  # a Client or a cluster object: its address
        from importer.cluster import scheduler_address

        tunables = {**tunables, "dask": scheduler_address(tunables["dask"])}
    try:
        result = dataclasses.replace(options or SendOptions(), **tunables)
    except TypeError as exc:
        known = ", ".join(f.name for f in dataclasses.fields(SendOptions))
        raise UsageError(f"{exc}; send options are: {known}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if result.transport == "curl":  # a pycurl too old to use fails here, before anything
        from importer.curl import load_pycurl

        load_pycurl()
    return result


async def send_async(
    source: Any,
    /,
    *,
    schema: SchemaLike,
    csv: dict[str, str] | None = None,
    endpoint: str | None = None,
    sandbox: bool = False,
    ledger: LedgerPath | None = DEFAULT_LEDGER,
    new_run: bool = False,
    unknown: Unknown = "resend",
    options: SendOptions | None = None,
    rejects: str | Path | None = None,
    rejects_rows: str | Path | None = None,
    since: TimeBound = None,
    until: TimeBound = None,
    batch_size: int = DEFAULT_SEND_BATCH_SIZE,
    progress: ProgressLike = None,
    control: Control | None = None,
    now: float | None = None,
    yes: bool = False,
    datafile: DatafileLike | None = None,
    report_html: str | Path | None = None,
    canary: int | None = None,
    **tunables: Any,
) -> Report:
    """Validate, map and deliver every row; the native async form of :func:`send`.

    Args:
        source: a path, a list of paths, a DataFrame, an Arrow table or stream.
        schema: a schema file path, a dict, or a :class:`~importer.schema.Schema`.
        endpoint: override the schema's endpoint template (e.g. a collector's URL).
        sandbox: start a local collector and send there instead.
        ledger: the SQLite ledger file that makes the run resumable (default:
            $EVENT_BACKFILL_LEDGER, else ledger.sqlite in the user's data directory); None
            for no ledger.
        new_run: start afresh even though the ledger holds a run of this source.
        unknown: rows an interrupted run may or may not have delivered: "resend" them
            (never loses) or "skip" them (never duplicates).
        options: a :class:`~importer.sender.SendOptions`; keyword tunables such as
            ``concurrency=64`` or ``rate=100`` override its fields. ``dask=`` takes a
            ``distributed.Client``, a cluster object or a scheduler address: one sender on
            each of its workers (the ledger stays here).
        rejects: write every broken rule to this .csv or .parquet file.
        rejects_rows: write each rejected row as read plus its rules (see :func:`check`).
        since, until: only events in this time window (as for :func:`check`). Rows outside
            it count as filtered and stay unsent in the ledger: a run with another window
            sends them.
        batch_size: rows per batch.
        progress: None (a bar in notebooks, nothing in scripts), True, False, or a
            :class:`~importer.progress.Progress`.
        control: lets another thread stop the run (``send`` uses it for Ctrl-C).
        now: the current epoch time for the future/age checks.
        yes: send to hosts that are not loopback (a real endpoint). Without it such a
            run is refused before any connection: see :func:`production_summary`.
        datafile: the project's datafile (as for :func:`check`): rows whose ids it does
            not have are rejected, never sent.
        report_html: also write the report as one self-contained HTML page with charts
            (needs the ``report`` extra; checked before anything is sent).
        canary: send only this many rows, spread over every experiment/variation pair
            present (one of each first), then stop (``report.stopped == "canary"``, the
            rest pending); the same call without it sends the rest, never a canary row again.

    Returns:
        The :class:`~importer.report.Report`; its accounting line always holds.

    Raises:
        ImporterError: a schema, input or ledger problem (nothing sent), or an input that
            became unreadable midway (what was sent is in the ledger).
    """
    if unknown not in ("resend", "skip"):
        raise UsageError(f"unknown must be 'resend' or 'skip', got {unknown!r}")
    if canary is not None and canary < 1:
        raise UsageError(f"canary must be at least 1 row, got {canary}")
    settings = RunSettings(
        options=_send_options(options, tunables),
        batch_size=batch_size,
        sandbox=sandbox,
        progress=choose(progress),
        control=control or Control(),
    )
    check_output(rejects, "--rejects")
    check_output(rejects_rows, "--rejects-rows")
    check_report_html(report_html)
    opened, loaded, mapper = prepare_mapped(
        source,
        schema,
        csv,
        endpoint=endpoint,
        since=since,
        until=until,
        now=now,
        datafile=datafile,
    )
    if not sandbox:
        where = await asyncio.to_thread(destination_of, opened, loaded, mapper.endpoint)
        if where.production and not yes:
            raise UsageError(
                f"refusing to send to {', '.join(where.hosts[:5])} (not loopback) without "
                "confirmation: nothing was sent. Check first, then pass yes=True (CLI: --yes, "
                "or answer the prompt on a terminal); --sandbox sends to a local collector."
            )
        down: list[str] = []
        await preflight(
            where.template,
            where.project_ids,
            connect_timeout=settings.options.connect_timeout,
            on_unreachable=down.append,
        )
    report = Report("send", source=opened.name, schema=schema_name(schema))
    report.source_index = opened.index
    report.stats.watch(now=mapper.now, old_after=loaded.checks.old_after_days)
    if not sandbox:
        for line in down:
            report.warnings.append(f"not answering now (sending retries it): {line}")
            settings.progress.note(f"warning: not answering now: {line}")
    report.warnings += scale_warnings(opened, loaded)
    settings.rejected_rows, settings.columns = rows_writer(rejects_rows, opened, loaded)
    destination = SANDBOX if sandbox else mapper.endpoint
    replay = rejects is not None or rejects_rows is not None
    store = await asyncio.to_thread(
        _open_ledger, ledger, opened, loaded, destination, new_run, unknown, replay
    )
    report.resume, report.ledger = store.resume, store.recorded_in
    if mapper.datafile is not None and isinstance(store, SqliteLedger):
        revision = mapper.datafile.revision or "none"
        await asyncio.to_thread(store.record_datafile, revision)
    if report.resume is not None and report.ledger is not None:
        report.failed_earlier = report.resume.failed
        report.rejected_earlier = report.resume.rejected
        recorded = f"--ledger {report.ledger.path} --run {report.ledger.run}"
        settings.retry_command = f"event-backfill retry {recorded}"
        settings.progress.note(f"ledger: {report.ledger.path} (run {report.ledger.run})")
    for line in resume_lines(report.resume, report.ledger):
        settings.progress.note(line)
    settings.rejects = RejectsWriter(rejects) if rejects is not None else None
    collector = Collector() if sandbox else None
    outcome = None
    try:
        if canary is not None:
            chosen = await asyncio.to_thread(_canary, opened, mapper, store, canary)
            settings.canary = chosen.positions
            if (short := chosen.shortfall()) is not None:
                report.warnings.append(short)
                settings.progress.note(f"warning: {short}")
        if collector is not None:
            mapper.endpoint = await collector.start()
            report.notes.append(f"sandbox: sent to a local collector at {mapper.endpoint}")
        feed = source_feed(opened, mapper, store, report, settings)
        outcome = await deliver(feed, store, report, settings, total=opened.total_rows())
    finally:
        finished = outcome is not None and outcome.stopped is None and outcome.pending == 0
        await asyncio.to_thread(store.close, finished=finished)
        report.receipt = store.receipt  # the whole run's, read as the ledger closed
        if settings.rejects is not None:
            settings.rejects.close()
            report.rejects_path = str(settings.rejects.path)
        if settings.rejected_rows is not None:
            settings.rejected_rows.close()
            report.rejects_rows_path = str(settings.rejected_rows.path)
        if collector is not None:
            report.collector = collector.stats.to_dict()
            await collector.stop()
    datafile_lines(report, mapper)
    if report_html is not None:
        await asyncio.to_thread(html_report.write, report, report_html)
    return report


def _canary(source: Source, mapper: Mapper, store: Settled, n: int) -> Canary:
    """The positions a canary of ``n`` rows sends: a first pass over the rows not settled
    yet (its warnings are not counted: the send's own pass counts them)."""
    warned, mapper.warned = mapper.warned, type(mapper.warned)()
    try:
        chosen = canary_rows(mapped_batches(source, mapper, ledger=store, workers=1), n)
    finally:
        mapper.warned = warned
    return chosen


def _open_ledger(
    path: LedgerPath | None,
    source: Source,
    schema: Schema,
    destination: str,
    new_run: bool,
    unknown: Unknown,
    replay_rejects: bool = False,
) -> SqliteLedger | MemoryLedger:
    if path is None:
        return MemoryLedger()
    key = RunKey(source.key, source.name, source.fingerprint(), schema.fingerprint(), destination)
    return SqliteLedger(
        ledger_path(path),
        key,
        new_run=new_run,
        unknown=unknown,
        dedupe=bool(schema.dedupe_key),
        replay_rejects=replay_rejects,
    )


def send(source: Any, /, **kwargs: Any) -> Report:
    """Validate, map and deliver every row; works in scripts and inside a running loop.

    Takes the arguments of :func:`send_async`. The run happens in a worker thread with its own
    event loop, so it works the same in a plain script and in Jupyter (whose loop is already
    running). Ctrl-C (KeyboardInterrupt) stops it gracefully: in-flight requests drain, the
    ledger commits and the report says how to resume; a second Ctrl-C stops it at once.
    """
    control = kwargs.pop("control", None) or Control()
    return _in_thread(lambda: send_async(source, control=control, **kwargs), control)  # type: ignore[no-any-return]


def _in_thread(work: Any, control: Control) -> Any:
    """Run a coroutine factory in a worker thread with its own loop; Ctrl-C stops it gracefully."""
    result: list[Any] = []
    failure: list[BaseException] = []
    finished = threading.Event()

    def target() -> None:
        try:
            result.append(loops.run(work()))
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)
        finally:
            finished.set()

    thread = threading.Thread(target=target, name="event-backfill", daemon=True)
    thread.start()
    # Not thread.join(): on Python 3.11 a join cut by KeyboardInterrupt can mark the thread
    # stopped while it still runs (cpython#90882).
    while not finished.is_set():
        try:
            finished.wait(0.1)
        except KeyboardInterrupt:
            control.request_stop()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


async def retry_async(
    *,
    ledger: LedgerPath = DEFAULT_LEDGER,
    run: int | None = None,
    options: SendOptions | None = None,
    progress: ProgressLike = None,
    control: Control | None = None,
    yes: bool = False,
    **tunables: Any,
) -> Report:
    """Send the rows that failed permanently again (after the cause was fixed).

    Args:
        ledger: the ledger file.
        run: only this run's failures (default: every run's).
        options: how to send; keyword tunables override its fields.
        progress: None (a bar in notebooks, nothing in scripts), True, False, or a
            :class:`~importer.progress.Progress`.
        control: lets another thread stop the retry.
        yes: re-send to hosts that are not loopback (see :func:`send_async`).

    Returns:
        A report: rows read = failures retried = sent + failed + pending.
    """
    settings = RunSettings(
        options=_send_options(options, tunables),
        progress=choose(progress),
        control=control or Control(),
    )
    path = ledger_path(ledger)
    _count, origins = await asyncio.to_thread(ledgers.failure_origins, path, run=run)
    real = [o for o in origins if not is_loopback(parse_template(o + "/").host_pattern)]
    if real and not yes:
        raise UsageError(
            f"refusing to re-send to {', '.join(real[:5])} (not loopback) without "
            "confirmation: nothing was sent. Pass yes=True (CLI: --yes, or answer the prompt)."
        )
    for origin in origins:
        await preflight(
            parse_template(origin + "/"),
            [],
            connect_timeout=settings.options.connect_timeout,
            on_unreachable=settings.progress.note,
        )
    return await _retry_async(path, settings, run=run)


def retry_summary(*, ledger: LedgerPath = DEFAULT_LEDGER, run: int | None = None) -> str | None:
    """What a retry to a real (not loopback) endpoint would re-send; None if all loopback."""
    path = ledger_path(ledger)
    count, origins = ledgers.failure_origins(path, run=run)
    real = [o for o in origins if not is_loopback(parse_template(o + "/").host_pattern)]
    if not real:
        return None
    return (
        "about to RE-SEND to a real endpoint (not loopback):\n"
        f"  hosts: {', '.join(real)}\n"
        f"  rows: {count:,} failed rows of {'run ' + str(run) if run is not None else 'every run'}"
        f"\n  ledger: {path}"
    )


def retry(**kwargs: Any) -> Report:
    """:func:`retry_async` from synchronous code (a script or a notebook cell)."""
    control = kwargs.pop("control", None) or Control()
    return _in_thread(lambda: retry_async(control=control, **kwargs), control)  # type: ignore[no-any-return]


def status(*, ledger: LedgerPath = DEFAULT_LEDGER) -> pd.DataFrame:
    """Each run in the ledger: source, state, counts by state, unknown rows, last activity."""
    return ledgers.status(ledger_path(ledger))


def failures(*, ledger: LedgerPath = DEFAULT_LEDGER, run: int | None = None) -> pd.DataFrame:
    """The failed rows with their last status and error."""
    return ledgers.failures(ledger_path(ledger), run=run)


def export_failures(
    out: str | Path, *, ledger: LedgerPath = DEFAULT_LEDGER, run: int | None = None
) -> int:
    """Write the failed rows to a .csv (spreadsheet-safe) or .parquet file; how many."""
    check_output(out, "failures file")
    target = Path(out)
    if target.suffix.lower() not in (".csv", ".parquet"):
        raise UsageError(f"{target}: the export must end in .csv or .parquet")
    frame = ledgers.failures(ledger_path(ledger), run=run)
    write_table(pa.Table.from_pandas(frame, preserve_index=False), target)
    return len(frame)


def report_html(
    report: Report,
    path: str | Path | None = None,
    *,
    receipt: ReceiptLike | None = None,
) -> html_report.HtmlReport:
    """A report as one self-contained HTML page with charts (the ``report`` extra: Bokeh):
    a notebook shows it in the cell, ``str()`` of it is the page; with ``path``, it is also
    written there. ``receipt``: chart and list this receipt instead of the report's (e.g.
    the whole run's, :func:`receipt`)."""
    page = html_report.render(report, receipt=receipt)
    if path is not None:
        page.save(path)
    return page


def receipts(*, ledger: LedgerPath = DEFAULT_LEDGER, run: int | None = None) -> list[Receipt]:
    """The receipt of one run (or of every run) as the ledger holds it."""
    return ledgers.receipts(ledger_path(ledger), run=run)


def receipt(*, ledger: LedgerPath = DEFAULT_LEDGER, run: int | None = None) -> pd.DataFrame:
    """What a run delivered, to compare with the results page: one row per run, experiment,
    variation, UTC day, event name and currency, with ``events`` and ``value`` (the sum of
    v; an empty v counts as an event and adds 0). An event counts once in each of its
    experiments. Every run's, or ``run``'s only.
    """
    frame: pd.DataFrame = _receipt_table(receipts(ledger=ledger, run=run)).to_pandas()
    return frame


def export_receipt(
    out: str | Path, *, ledger: LedgerPath = DEFAULT_LEDGER, run: int | None = None
) -> int:
    """Write the receipt to a .csv (spreadsheet-safe) or .parquet file; how many lines."""
    check_output(out, "receipt file")
    target = Path(out)
    if target.suffix.lower() not in (".csv", ".parquet"):
        raise UsageError(f"{target}: the receipt file must end in .csv or .parquet")
    table = _receipt_table(receipts(ledger=ledger, run=run))
    write_table(table, target)
    return int(table.num_rows)


def _receipt_table(found: list[Receipt]) -> pa.Table:
    """Every run's receipt in one table, a ``run`` column first."""
    tables = [
        item.table().add_column(0, "run", pa.array([item.run] * len(item.lines), pa.int64()))
        for item in found or [Receipt(0, ())]
    ]
    return pa.concat_tables(tables)
