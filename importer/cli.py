"""The ``event-backfill`` command: parse options, call :mod:`importer.api`, render, exit.

It reads no file and builds no URL itself. Reports go to stdout (``--json`` for machines);
progress and errors go to stderr. Exit codes: 0 all good, 1 stopped and resumable, 2 usage
or schema error, 3 finished with rejected or failed rows.
"""

from __future__ import annotations

import enum
import importlib
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from importer.errors import ImporterError, UsageError
from importer.options import (
    DEFAULT_CONCURRENCY,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_GIVE_UP_AFTER,
    DEFAULT_HOST,
    DEFAULT_LEDGER,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PORT,
    DEFAULT_TOTAL_TIMEOUT,
    LEDGER_ENV,
    LedgerPath,
    SendOptions,
    ledger_path,
)
from importer.progress import Monitor, NullProgress, Progress, TqdmProgress

if TYPE_CHECKING:
    from importer import api
    from importer.report import Report
else:

    class _Later:
        """``importer.api``, imported on first use: --help and --version stay instant."""

        def __getattr__(self, name: str) -> Any:
            return getattr(importlib.import_module("importer.api"), name)

    api = _Later()

app = typer.Typer(
    pretty_exceptions_show_locals=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    help="Validate, map and deliver historical conversion data to the Event API.",
)


def _version(value: bool) -> None:
    if value:
        from importer._version import __version__

        typer.echo(f"event-backfill {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Validate, map and deliver historical conversion data to the Event API.

    Exit codes: 0 all sent (or nothing to do); 1 stopped, resumable (run the same command
    again); 2 usage, schema or input error, nothing sent; 3 finished, some rows rejected (fix
    the data); 4 finished, some rows failed permanently (run retry once the cause is fixed;
    4 wins over 3).
    """


Files = Annotated[
    list[Path],
    typer.Argument(
        help="CSV, CSV.gz or Parquet files, or directories of Parquet files.", show_default=False
    ),
]
SchemaOpt = Annotated[Path, typer.Option("--schema", "-s", help="The schema TOML file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
RejectsOpt = Annotated[
    Path | None,
    typer.Option(
        help="Write every rejected row to this .csv or .parquet file.", show_default=False
    ),
]
LogFileOpt = Annotated[
    Path | None,
    typer.Option(
        help="Append one JSON line per event of note (start, outage, recover, stop, finish, "
        "with counts) to this file.",
        show_default=False,
    ),
]
StatusIntervalOpt = Annotated[
    float,
    typer.Option(
        help="Without a terminal (cron, CI, nohup), print a status line to stderr this often "
        "(seconds), and at every change of state.",
        min=0.1,
    ),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Status lines on stderr even on a terminal.")
]
YesOpt = Annotated[
    bool,
    typer.Option(
        "--yes",
        "-y",
        help="Send to a real (not loopback) endpoint without asking; needed without a terminal.",
    ),
]
RejectsRowsOpt = Annotated[
    Path | None,
    typer.Option(
        help="Write each rejected row as read (every column) plus its rules to this .csv "
        "file: fix the cells and import it again with the same schema.",
        show_default=False,
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        help="Only events at or after this ISO date/datetime (UTC unless it has an offset); "
        "the others count as filtered.",
        show_default=False,
    ),
]
UntilOpt = Annotated[
    str | None,
    typer.Option(
        help="Only events before this ISO datetime, or up to the end of this ISO date.",
        show_default=False,
    ),
]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        help="Endpoint URL template; {project_id} is replaced per row.", show_default=False
    ),
]
DatafileOpt = Annotated[
    str | None,
    typer.Option(
        "--datafile",
        help="The project's datafile (a JSON path or http(s) URL, fetched once): rows whose "
        "ids it does not have are rejected, and a schema's keys are resolved through it.",
        show_default=False,
    ),
]

LedgerOpt = Annotated[
    Path | None,
    typer.Option(
        help=f"The SQLite ledger that makes runs resumable [default: ${LEDGER_ENV}, else "
        "ledger.sqlite in your data directory, e.g. ~/.local/share/event-backfill/]",
        show_default=False,
    ),
]
ConcurrencyOpt = Annotated[int, typer.Option(help="Requests in flight at once.", min=1)]
RateOpt = Annotated[
    float | None,
    typer.Option(help="At most N requests per second.", min=0.001, show_default=False),
]
MaxAttemptsOpt = Annotated[int, typer.Option(help="Attempts per row.", min=1)]
GiveUpOpt = Annotated[
    float,
    typer.Option(help="Stop (resumable) when nothing succeeded for this many seconds.", min=0.1),
]


class ProgressMode(enum.StrEnum):
    """How send and retry show their progress."""

    AUTO = "auto"
    JSON = "json"


ProgressOpt = Annotated[
    ProgressMode,
    typer.Option(
        help="'auto': a bar on a terminal, status lines otherwise; 'json': one JSON object "
        "per event on stderr (the --log-file events, plus status every --status-interval).",
    ),
]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds per request.", min=0.01)]
ConnectTimeoutOpt = Annotated[float, typer.Option(help="Seconds to connect.", min=0.01)]
DrainTimeoutOpt = Annotated[
    float, typer.Option(help="On Ctrl-C/SIGTERM, seconds in-flight requests may finish.", min=0)
]
DelimiterOpt = Annotated[
    str | None,
    typer.Option(
        help="CSV delimiter, one character (overrides the schema's [csv] delimiter).",
        show_default=False,
    ),
]
EncodingOpt = Annotated[
    str | None,
    typer.Option(
        help="CSV text encoding, e.g. cp1252 (overrides the schema's [csv] encoding).",
        show_default=False,
    ),
]


class TransportChoice(enum.StrEnum):
    """The HTTP client that sends."""

    AIOHTTP = "aiohttp"
    CURL = "curl"


TransportOpt = Annotated[
    TransportChoice,
    typer.Option(
        "--transport",
        help="'aiohttp', or 'curl': libcurl in its own thread, ~4x the events per core "
        "(pip install 'event-backfill[curl]').",
    ),
]
Http2Opt = Annotated[
    bool,
    typer.Option(
        "--http2",
        help="HTTP/2 over TLS where the server offers it: requests multiplexed over few "
        "connections (--transport curl).",
    ),
]
WorkersOpt = Annotated[
    int,
    typer.Option(
        "--workers",
        help="Sender processes, each with --concurrency connections (the reading, mapping "
        "and ledger stay in this one).",
        min=1,
    ),
]
DaskOpt = Annotated[
    str | None,
    typer.Option(
        "--dask",
        help="A Dask scheduler's address (tcp://host:8786): send from one sender on each of "
        "its workers; the ledger stays here (pip install 'event-backfill[dask]').",
        show_default=False,
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        help="Write to this file instead of stdout (preview: the URLs; receipt: .csv or .parquet).",
        show_default=False,
    ),
]
RunOpt = Annotated[
    int | None, typer.Option(help="Only this run (`status` lists them).", show_default=False)
]
T = TypeVar("T")


class UnknownPolicy(enum.StrEnum):
    """What to do with rows an interrupted run may or may not have delivered."""

    RESEND = "resend"
    SKIP = "skip"


failures_app = typer.Typer(no_args_is_help=True, help="The rows that failed permanently.")
app.add_typer(failures_app, name="failures")


def _run(action: Callable[[], T]) -> T:
    """Run a library call; a user sees a message and an exit code, never a traceback."""
    try:
        return action()
    except ImporterError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: nothing was sent", err=True)
        raise typer.Exit(1) from None


def _send_options(**options: Any) -> SendOptions:
    """SendOptions, or the option error as a usage error (exit 2)."""
    try:
        return SendOptions(**options)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(UsageError.exit_code) from None


def _confirm(banner: str | None, question: str, *, yes: bool) -> bool:
    """The production gate: nothing to ask for loopback; a prompt on a terminal; else --yes.

    The banner is printed with --yes too, so a cron log says what went to production.
    Returns whether the run may send to a real endpoint.
    """
    if banner is None:
        return yes
    typer.echo(banner, err=True)
    if yes:
        return True
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        typer.echo(
            "error: not a terminal, so nobody can confirm: nothing was sent. Pass --yes to "
            "send to this real endpoint (or --sandbox / --endpoint http://127.0.0.1:PORT/event "
            "to rehearse).",
            err=True,
        )
        raise typer.Exit(2)
    try:
        confirmed = typer.confirm(question, default=False, err=True)
    except (typer.Abort, EOFError):  # Ctrl-C or Ctrl-D at the prompt: a no
        confirmed = False
    if not confirmed:
        typer.echo("\nnothing was sent", err=True)
        raise typer.Exit(2)
    return True


def _csv(delimiter: str | None, encoding: str | None) -> dict[str, str] | None:
    """The CSV options given on the command line, overriding the schema's [csv]."""
    given = {"delimiter": delimiter, "encoding": encoding}
    return {k: v for k, v in given.items() if v is not None} or None


def _ledger(path: Path | None) -> LedgerPath:
    return DEFAULT_LEDGER if path is None else path


def _progress(quiet: bool) -> Progress:
    # Quiet hides the bar, not the notes (such as what a resumed run found).
    return TqdmProgress(file=sys.stderr, disable=True if quiet else None)


def _monitor(
    quiet: bool, log_file: Path | None, interval: float, verbose: bool, json_progress: bool
) -> tuple[Monitor, Callable[[], None]]:
    """The progress of a send or retry: the bar, status lines without a terminal, a log.

    Returns the monitor and a function closing its log file.
    """
    log = None
    if log_file is not None:
        _run(lambda: api.check_output(log_file, "--log-file"))
        log = log_file.open("a", encoding="utf-8")
    periodic = verbose or json_progress or not sys.stderr.isatty()
    monitor = Monitor(
        NullProgress() if json_progress else _progress(quiet),
        stream=sys.stderr,
        interval=interval if periodic else None,
        log=log,
        json_stream=json_progress,
    )
    return monitor, (log.close if log is not None else lambda: None)


def _monitored(
    work: Callable[[Monitor], Report],
    *,
    quiet: bool,
    log_file: Path | None,
    interval: float,
    verbose: bool,
    as_json: bool,
    progress: ProgressMode = ProgressMode.AUTO,
) -> None:
    """Run a send or retry with its monitor and log, show the report, exit with its code."""
    json_progress = progress is ProgressMode.JSON
    monitor, close_log = _monitor(quiet, log_file, interval, verbose, json_progress)
    try:
        report = _run(lambda: work(monitor))
        _finish(monitor, report)
    except typer.Exit as stopped:
        monitor.event("error", exit_code=stopped.exit_code)
        raise
    finally:
        close_log()
    _show(report, as_json)
    raise typer.Exit(report.exit_code)


def _finish(monitor: Monitor, report: Report) -> None:
    """The closing event, and every warning and note on stderr as well as in the report."""
    data = report.to_dict()
    stopped = data.get("stopped")
    monitor.event(
        "stop" if report.pending else "finish",
        message=None,
        source=report.source,
        ledger=(data.get("ledger") or {}).get("path"),
        rows_done=report.rows_read - report.pending,
        exit_code=report.exit_code,
        reason=stopped,
        accounting=report.accounting,
        **{k: data[k] for k in ("rows_read", "filtered", "rejected") if k in data},
        **{k: data[k] for k in ("sent", "failed", "pending") if k in data},
    )
    lines = [*(f"warning: {w}" for w in report.warnings), *report.notes]
    if monitor.json_stream:
        for line in lines:
            monitor.event("note", line)
    elif not (sys.stdout.isatty() and sys.stderr.isatty()):  # else the report shows them once
        for line in lines:
            typer.echo(line, err=True)


def _echo_json(command: str, **fields: Any) -> None:
    """One JSON object on stdout, as docs/json.md describes: version and command first."""
    data = {"version": 1, "command": command, **fields}
    typer.echo(json.dumps(data, indent=2, default=str))


def _show(report: Report, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        typer.echo(report.render(), nl=False)


@app.command()
def check(
    files: Files,
    schema: SchemaOpt,
    rejects: RejectsOpt = None,
    rejects_rows: RejectsRowsOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    endpoint: EndpointOpt = None,
    delimiter: DelimiterOpt = None,
    encoding: EncodingOpt = None,
    datafile: DatafileOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Validate every row and show what send would do; sends nothing.

    \b
    Example: event-backfill check sample_data/offline_sales.csv --schema schemas/offline_sales.toml
    """
    report = _run(
        lambda: api.check(
            files,
            schema=schema,
            csv=_csv(delimiter, encoding),
            rejects=rejects,
            rejects_rows=rejects_rows,
            since=since,
            until=until,
            endpoint=endpoint,
            progress=_progress(quiet),
            datafile=datafile,
        )
    )
    _show(report, as_json)
    raise typer.Exit(report.exit_code)


@app.command()
def preview(
    files: Files,
    schema: SchemaOpt,
    n: Annotated[
        int | None, typer.Option("-n", help="Show at most N requests.", show_default=False)
    ] = None,
    out: OutOpt = None,
    rejects: RejectsOpt = None,
    rejects_rows: RejectsRowsOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    endpoint: EndpointOpt = None,
    delimiter: DelimiterOpt = None,
    encoding: EncodingOpt = None,
    datafile: DatafileOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Print the requests send would make, one URL per line; sends nothing.

    With --json the report goes to stdout and the URLs into it ("requests"), or to --out.

    \b
    Example: event-backfill preview sample_data/offline_sales.csv -s schemas/offline_sales.toml -n 5
    """
    csv = _csv(delimiter, encoding)
    _preview(
        files,
        schema,
        csv,
        n,
        out,
        rejects,
        rejects_rows,
        since,
        until,
        endpoint,
        as_json,
        quiet,
        datafile,
    )


def _preview(
    files: list[Path],
    schema: Path,
    csv: dict[str, str] | None,
    n: int | None,
    out: Path | None,
    rejects: Path | None,
    rejects_rows: Path | None,
    since: str | None,
    until: str | None,
    endpoint: str | None,
    as_json: bool,
    quiet: bool,
    datafile: Any = None,
) -> None:
    import io

    _run(lambda: api.check_output(out, "--out"))
    collected = io.StringIO() if as_json and out is None else None
    handle = collected or (out.open("w", encoding="utf-8") if out else sys.stdout)
    try:
        report = _run(
            lambda: api.write_requests(
                files,
                handle,
                schema=schema,
                csv=csv,
                n=n,
                rejects=rejects,
                rejects_rows=rejects_rows,
                endpoint=endpoint,
                since=since,
                until=until,
                progress=_progress(quiet) if out or as_json else False,
                datafile=datafile,
            )
        )
    finally:
        if out:
            handle.close()
    if as_json:
        data = report.to_dict()
        if collected is not None:
            data["requests"] = collected.getvalue().splitlines()
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        where = f" to {out}" if out else ""
        said = [f"{report.requests_written:,} requests written{where}"]
        if report.filtered:
            said.append(f"{report.filtered:,} rows filtered")
        if report.rejected:
            said.append(f"{report.rejected:,} rows rejected (run check to see why)")
        typer.echo("; ".join(said), err=True)
        for line in [*(f"warning: {w}" for w in report.warnings), *report.notes]:
            typer.echo(line, err=True)
    raise typer.Exit(0)


@app.command()
def send(
    files: Files,
    schema: SchemaOpt,
    endpoint: EndpointOpt = None,
    delimiter: DelimiterOpt = None,
    encoding: EncodingOpt = None,
    sandbox: Annotated[
        bool,
        typer.Option(
            "--sandbox", help="Start a local collector and send there; show what it received."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Send nothing: print the requests, as preview does.")
    ] = False,
    concurrency: ConcurrencyOpt = DEFAULT_CONCURRENCY,
    rate: RateOpt = None,
    max_attempts: MaxAttemptsOpt = DEFAULT_MAX_ATTEMPTS,
    timeout: TimeoutOpt = DEFAULT_TOTAL_TIMEOUT,
    connect_timeout: ConnectTimeoutOpt = DEFAULT_CONNECT_TIMEOUT,
    give_up_after: GiveUpOpt = DEFAULT_GIVE_UP_AFTER,
    drain_timeout: DrainTimeoutOpt = DEFAULT_DRAIN_TIMEOUT,
    transport: TransportOpt = TransportChoice.AIOHTTP,
    http2: Http2Opt = False,
    workers: WorkersOpt = 1,
    dask: DaskOpt = None,
    rejects: RejectsOpt = None,
    rejects_rows: RejectsRowsOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    datafile: DatafileOpt = None,
    report_html: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Also write the report as one self-contained HTML page with charts (needs "
            "the 'report' extra: pip install 'event-backfill[report]').",
            show_default=False,
        ),
    ] = None,
    canary: Annotated[
        int | None,
        typer.Option(
            "--canary",
            help="Send only N rows, spread over every experiment/variation pair (one of each "
            "first), then stop (exit 1) with their receipt: check the results page, then run "
            "the same command without --canary for the rest.",
            min=1,
            show_default=False,
        ),
    ] = None,
    ledger: LedgerOpt = None,
    no_ledger: Annotated[
        bool, typer.Option("--no-ledger", help="Keep no ledger: the run cannot be resumed.")
    ] = False,
    new_run: Annotated[
        bool,
        typer.Option(
            "--new-run", help="Start afresh although the ledger holds a run of this file."
        ),
    ] = False,
    unknown: Annotated[
        UnknownPolicy,
        typer.Option(
            help="Rows an interrupted run may have sent: 'resend' (never loses) or 'skip' "
            "(never duplicates)."
        ),
    ] = UnknownPolicy.RESEND,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    yes: YesOpt = False,
    log_file: LogFileOpt = None,
    status_interval: StatusIntervalOpt = 30.0,
    verbose: VerboseOpt = False,
    progress: ProgressOpt = ProgressMode.AUTO,
) -> None:
    """Validate, map and deliver every row, with retries; prints a report that reconciles.

    \b
    Example: event-backfill send sample_data/impressions.csv -s schemas/impressions.toml --sandbox
    """
    if dry_run:
        csv = _csv(delimiter, encoding)
        nothing = (None, None, None, None)  # n, out, rejects, rejects_rows
        _preview(files, schema, csv, *nothing, since, until, endpoint, as_json, quiet, datafile)
    options = _send_options(
        concurrency=concurrency,
        rate=rate,
        max_attempts=max_attempts,
        total_timeout=timeout,
        connect_timeout=connect_timeout,
        give_up_after=give_up_after,
        drain_timeout=drain_timeout,
        transport=transport.value,
        http2=http2,
        workers=workers,
        dask=dask,
    )
    _run(lambda: api.check_report_html(report_html))  # before the gate asks anything
    # Loaded once: a URL is fetched once for the production gate's check and the send.
    known = None if datafile is None else _run(lambda: api.load_datafile(datafile))
    if not sandbox:
        banner = _run(
            lambda: api.production_summary(
                files,
                schema=schema,
                csv=_csv(delimiter, encoding),
                endpoint=endpoint,
                since=since,
                until=until,
                ledger=None if no_ledger else _ledger(ledger),
                datafile=known,
            )
        )
        yes = _confirm(banner, "Send these events?", yes=yes)
    control = api.Control()
    _on_signals(control)
    _monitored(
        lambda monitor: api.send(
            files,
            yes=yes,
            schema=schema,
            csv=_csv(delimiter, encoding),
            endpoint=endpoint,
            sandbox=sandbox,
            options=options,
            rejects=rejects,
            rejects_rows=rejects_rows,
            since=since,
            until=until,
            ledger=None if no_ledger else _ledger(ledger),
            new_run=new_run,
            unknown=unknown.value,
            progress=monitor,
            control=control,
            datafile=known,
            report_html=report_html,
            canary=canary,
        ),
        quiet=quiet,
        log_file=log_file,
        interval=status_interval,
        verbose=verbose,
        as_json=as_json,
        progress=progress,
    )


@app.command()
def status(ledger: LedgerOpt = None, as_json: JsonOpt = False) -> None:
    """Show each run in the ledger: source, state, counts, unknown rows, last activity.

    \b
    Example: event-backfill status --ledger ledger.sqlite
    """
    path = ledger_path(ledger)
    frame = _run(lambda: api.status(ledger=path))
    if as_json:
        # Plain json.dumps: pandas' to_json escapes every slash ("http:\/\/...").
        _echo_json("status", ledger=str(path), runs=frame.to_dict("records"))
        raise typer.Exit(0)
    typer.echo(f"ledger: {path}")
    if frame.empty:
        typer.echo(f"{path}: no runs yet")
    for run in frame.to_dict("records"):
        typer.echo(
            f"run {run['run']}  {run['state']:<8}  {run['source']}\n"
            f"  to {run['endpoint']}\n"
            f"  rows seen {run['rows_seen']:,}: settled {run['settled']:,} (sent {run['sent']:,}, "
            f"filtered {run['filtered']:,}, rejected {run['rejected']:,}, failed "
            f"{run['failed']:,}, duplicates "
            f"{run['duplicates']:,}, unknown skipped {run['unknown_skipped']:,}); "
            f"unknown {run['unknown']:,}\n"
            f"  started {run['created']}, last activity {run['last_activity']}"
            + (
                f"\n  checked against datafile revision {run['datafile_revision']}"
                if run["datafile_revision"] is not None
                else ""
            )
        )
        if run["failed"]:
            typer.echo(
                f"  {run['failed']:,} rows failed permanently: once the cause is fixed, "
                f"re-send them with: event-backfill retry --ledger {path} --run {run['run']}"
            )
    raise typer.Exit(0)


@app.command()
def receipt(
    ledger: LedgerOpt = None,
    run: RunOpt = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show what each run delivered, per experiment, variation, UTC day, event and currency
    (events, sum of v): what the results page should show.

    \b
    Example: event-backfill receipt --run 3 --out receipt.csv
    """
    path = ledger_path(_ledger(ledger))
    found = _run(lambda: api.receipts(ledger=path, run=run))
    written = None if out is None else _run(lambda: api.export_receipt(out, ledger=path, run=run))
    if as_json:
        runs = [
            {
                "run": item.run,
                "sent": item.sent,
                "unreceipted": item.unreceipted,
                "unknown_skipped": item.unknown_skipped,
                "receipt": item.records(),
            }
            for item in found
        ]
        files = {} if out is None else {"file": str(out), "lines": written}
        _echo_json("receipt", ledger=str(path), run=run, runs=runs, **files)
    elif out is None:
        from importer.report import receipt_lines

        typer.echo(f"ledger: {path}")
        if not found:
            typer.echo(f"{path}: no runs yet")
        for item in found:
            typer.echo("\n".join(receipt_lines(item, folded=False)))
    if written is not None:
        typer.echo(f"{written:,} receipt lines written to {out}", err=True)
    raise typer.Exit(0)


@app.command()
def retry(
    ledger: LedgerOpt = None,
    run: RunOpt = None,
    concurrency: ConcurrencyOpt = DEFAULT_CONCURRENCY,
    rate: RateOpt = None,
    max_attempts: MaxAttemptsOpt = DEFAULT_MAX_ATTEMPTS,
    timeout: TimeoutOpt = DEFAULT_TOTAL_TIMEOUT,
    connect_timeout: ConnectTimeoutOpt = DEFAULT_CONNECT_TIMEOUT,
    give_up_after: GiveUpOpt = DEFAULT_GIVE_UP_AFTER,
    drain_timeout: DrainTimeoutOpt = DEFAULT_DRAIN_TIMEOUT,
    transport: TransportOpt = TransportChoice.AIOHTTP,
    http2: Http2Opt = False,
    workers: WorkersOpt = 1,
    dask: DaskOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    yes: YesOpt = False,
    log_file: LogFileOpt = None,
    status_interval: StatusIntervalOpt = 30.0,
    verbose: VerboseOpt = False,
    progress: ProgressOpt = ProgressMode.AUTO,
) -> None:
    """Send the rows that failed permanently again, once their cause is fixed.

    \b
    Example: event-backfill retry --ledger ledger.sqlite --run 3
    """
    options = _send_options(
        concurrency=concurrency,
        rate=rate,
        max_attempts=max_attempts,
        total_timeout=timeout,
        connect_timeout=connect_timeout,
        give_up_after=give_up_after,
        drain_timeout=drain_timeout,
        transport=transport.value,
        http2=http2,
        workers=workers,
        dask=dask,
    )
    banner = _run(lambda: api.retry_summary(ledger=_ledger(ledger), run=run))
    yes = _confirm(banner, "Re-send these rows?", yes=yes)
    control = api.Control()
    _on_signals(control)
    _monitored(
        lambda monitor: api.retry(
            yes=yes,
            ledger=_ledger(ledger),
            run=run,
            options=options,
            progress=monitor,
            control=control,
        ),
        quiet=quiet,
        log_file=log_file,
        interval=status_interval,
        verbose=verbose,
        as_json=as_json,
        progress=progress,
    )


@failures_app.command("export")
def failures_export(
    out: Annotated[Path, typer.Argument(help="A .csv (spreadsheet-safe) or .parquet file.")],
    ledger: LedgerOpt = None,
    run: RunOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the failed rows with their last status and error to a file.

    \b
    Example: event-backfill failures export failures.csv --run 3
    """
    path = _ledger(ledger)
    count = _run(lambda: api.export_failures(out, ledger=path, run=run))
    if as_json:
        where = str(ledger_path(path))
        _echo_json("failures export", ledger=where, run=run, file=str(out), rows=count)
    typer.echo(f"{count:,} failed rows written to {out}", err=True)
    raise typer.Exit(0)


@app.command()
def init(
    file: Annotated[Path, typer.Argument(help="A CSV, CSV.gz or Parquet file to look at.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Write the schema here (default: stdout).", show_default=False
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    sample_rows: Annotated[int, typer.Option(help="Rows to look at.", min=10)] = 2000,
    delimiter: Annotated[
        str | None,
        typer.Option(help="CSV delimiter (default: detected).", show_default=False),
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option(help="CSV text encoding, e.g. cp1252 (default: utf-8).", show_default=False),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print what was guessed as JSON (the schema text included)."),
    ] = False,
    datafile: DatafileOpt = None,
) -> None:
    """Guess a commented schema from a file's header and a sample of its rows.

    \b
    Example: event-backfill init sample_data/payments.csv -o payments.toml
    """
    if out is not None and out.exists() and not force:
        typer.echo(f"error: {out} exists; pass --force to overwrite it", err=True)
        raise typer.Exit(2)
    guess = _run(
        lambda: api.guess_schema(
            file,
            sample_rows=sample_rows,
            schema_path=out,
            delimiter=delimiter,
            encoding=encoding,
            datafile=datafile,
        )
    )
    if out is not None:
        _run(lambda: _write_text(out, guess.text))
    if as_json:
        _echo_json(
            "init",
            file=str(file),
            schema_file=str(out) if out else None,
            schema=guess.text,
            todos=list(guess.todos),
            notes=list(guess.notes),
        )
    elif out is None:
        typer.echo(guess.text, nl=False)
    for note in guess.notes:
        typer.echo(f"init: {note}", err=True)
    where = out or "schema.toml"
    more = f" --datafile {datafile}" if datafile is not None else ""
    typer.echo(f"next: event-backfill check {file} --schema {where}{more}", err=True)
    raise typer.Exit(0)


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


@app.command("schema")
def schema_command(
    json_schema: Annotated[
        bool, typer.Option("--json-schema", help="Print the JSON Schema of schema files.")
    ] = False,
    example: Annotated[
        str | None,
        typer.Option(
            help="Print the example schema of this name (see --list).", show_default=False
        ),
    ] = None,
    list_examples: Annotated[
        bool, typer.Option("--list", help="List the example schemas shipped with the tool.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --list: the list as JSON.")] = False,
) -> None:
    """Print the JSON Schema of schema files, or an example schema to start from.

    \b
    Example: event-backfill schema --example payments > payments.toml
    """
    from importer.schema import example_schemas, json_schema_text

    examples = example_schemas()
    if json_schema:
        typer.echo(json_schema_text(), nl=False)
    elif example is not None:
        if example not in examples:
            typer.echo(
                f"error: no example schema {example!r}; there are: {', '.join(examples)}",
                err=True,
            )
            raise typer.Exit(2)
        typer.echo(examples[example].read_text(encoding="utf-8"), nl=False)
    elif list_examples and as_json:
        described = [{"name": n, "about": _first_comment(p)} for n, p in examples.items()]
        _echo_json("schema", examples=described)
    elif list_examples:
        for name, path in examples.items():
            typer.echo(f"{name:<20} {_first_comment(path)}")
    else:
        typer.echo("pass --json-schema, --list or --example NAME (see --help)", err=True)
        raise typer.Exit(2)
    raise typer.Exit(0)


def _first_comment(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def _on_signals(control: api.Control) -> None:
    """First SIGINT/SIGTERM: stop gracefully. Second: exit at once, leases left for resume."""

    def handle(signum: int, frame: object) -> None:
        if control.requests:
            sys.stderr.write(
                "\nsecond signal: stopping at once; rows in flight will be "
                "reported as unknown when you resume\n"
            )
            sys.stderr.flush()
            os._exit(1)
        sys.stderr.write(
            f"\n{signal.Signals(signum).name}: stopping; in-flight requests "
            "finish first (signal again to stop at once)\n"
        )
        control.request_stop()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


@app.command()
def collector(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = DEFAULT_HOST,
    port: Annotated[
        int, typer.Option(help="Port (0 picks a free one).", min=0, max=65535)
    ] = DEFAULT_PORT,
    record: Annotated[
        Path | None,
        typer.Option(
            help="Record every request to this .ndjson or .sqlite file.", show_default=False
        ),
    ] = None,
    fail_rate: Annotated[float, typer.Option(help="Share of requests answered 500/503.")] = 0.0,
    throttle_rate: Annotated[
        float, typer.Option(help="Share answered 429 with Retry-After.")
    ] = 0.0,
    retry_after: Annotated[float, typer.Option(help="Retry-After seconds of the 429s.")] = 1.0,
    retry_after_date: Annotated[
        bool, typer.Option("--retry-after-date", help="Send Retry-After as an HTTP date.")
    ] = False,
    latency: Annotated[float, typer.Option(help="Seconds added to every answer.")] = 0.0,
    reset_rate: Annotated[float, typer.Option(help="Share of connections reset.")] = 0.0,
    hang_rate: Annotated[float, typer.Option(help="Share of requests left hanging.")] = 0.0,
    hang_seconds: Annotated[float, typer.Option(help="How long a hang lasts.")] = 60.0,
    bad_request_match: Annotated[
        str | None,
        typer.Option(
            help="Answer 400 to queries matching this regular expression.", show_default=False
        ),
    ] = None,
    bad_request_window: Annotated[
        str | None,
        typer.Option(
            help="Answer 400 to everything between START:END seconds after the first request.",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for fault choices.", show_default=False)
    ] = None,
) -> None:
    """Run a local Event API receiver that records what it gets, with optional faults.

    \b
    Example: event-backfill collector --port 8765 --record received.ndjson --fail-rate 0.1
    """
    window = _run(lambda: _window(bad_request_window))
    faults = _run(
        lambda: api.Faults(
            error_rate=fail_rate,
            throttle_rate=throttle_rate,
            retry_after=retry_after,
            retry_after_date=retry_after_date,
            latency=latency,
            reset_rate=reset_rate,
            hang_rate=hang_rate,
            hang_seconds=hang_seconds,
            bad_request_match=bad_request_match,
            bad_request_window=window,
            seed=seed,
        )
    )

    def announce(line: str) -> None:
        typer.echo(line)
        sys.stdout.flush()

    import asyncio  # here, not at the top: --help and --version stay instant

    try:
        _run(
            lambda: asyncio.run(
                api.serve(host, port, record=record, faults=faults, announce=announce)
            )
        )
    except KeyboardInterrupt:
        typer.echo("collector stopped", err=True)


def _window(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        start, end = (float(part) for part in text.split(":"))
    except ValueError:
        raise UsageError(f"--bad-request-window takes START:END in seconds, got {text!r}") from None
    return start, end


def main() -> None:
    """The console script."""
    app(prog_name="event-backfill")
