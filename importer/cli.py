"""The ``event-backfill`` command: parse options, call :mod:`importer.api`, render, exit.

It reads no file and builds no URL itself. Reports go to stdout (``--json`` for machines);
progress and errors go to stderr. Exit codes: 0 all good, 1 stopped and resumable, 2 usage
or schema error, 3 finished with rejected or failed rows.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from importer import api
from importer.errors import ImporterError
from importer.progress import NullProgress, Progress, TqdmProgress
from importer.report import Report

app = typer.Typer(
    pretty_exceptions_show_locals=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    help="Validate, map and deliver historical conversion data to the Event API.",
)

Files = Annotated[
    list[Path], typer.Argument(help="CSV, CSV.gz or Parquet files, or directories of Parquet files.",
                               show_default=False)
]
SchemaOpt = Annotated[Path, typer.Option("--schema", "-s", help="The schema TOML file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
EndpointOpt = Annotated[
    str | None,
    typer.Option(help="Endpoint URL template; {project_id} is replaced per row.", show_default=False),
]

T = TypeVar("T")


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


def _progress(quiet: bool) -> Progress:
    return NullProgress() if quiet else TqdmProgress(file=sys.stderr)


def _show(report: Report, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        typer.echo(report.render(), nl=False)


@app.command()
def check(
    files: Files,
    schema: SchemaOpt,
    rejects: Annotated[
        Path | None,
        typer.Option(help="Write every rejected row to this .csv or .parquet file.", show_default=False),
    ] = None,
    endpoint: EndpointOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Validate every row and show what send would do; sends nothing.

    Example: event-backfill check sample_data/offline_sales.csv --schema schemas/offline_sales.toml
    """
    report = _run(lambda: api.check(files, schema=schema, rejects=rejects, endpoint=endpoint,
                                    progress=_progress(quiet)))
    _show(report, as_json)
    raise typer.Exit(report.exit_code)


@app.command()
def preview(
    files: Files,
    schema: SchemaOpt,
    n: Annotated[int | None, typer.Option("-n", help="Show at most N requests.", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(help="Write the URLs to this file.", show_default=False)] = None,
    endpoint: EndpointOpt = None,
) -> None:
    """Print the requests send would make, one URL per line; sends nothing.

    Example: event-backfill preview sample_data/offline_sales.csv --schema schemas/offline_sales.toml -n 5
    """
    counts = _run(lambda: _write_urls(files, schema, n, out, endpoint))
    written, rejected = counts
    where = f" to {out}" if out else ""
    typer.echo(f"{written:,} requests written{where}; {rejected:,} rows rejected "
               "(run check to see why)" if rejected else f"{written:,} requests written{where}",
               err=True)
    raise typer.Exit(0)


def _write_urls(files: list[Path], schema: Path, n: int | None, out: Path | None,
                endpoint: str | None) -> tuple[int, int]:
    written = rejected = 0
    handle = out.open("w", encoding="utf-8") if out else sys.stdout
    try:
        for mapped in api.iter_events(files, schema=schema, endpoint=endpoint):
            rejected += mapped.rejected
            urls = mapped.events.column("url").to_pylist()
            if n is not None:
                urls = urls[: max(0, n - written)]
            if urls:
                handle.write("\n".join(urls) + "\n")
            written += len(urls)
            if n is not None and written >= n:
                break
    finally:
        if out:
            handle.close()
    return written, rejected


def main() -> None:
    """The console script."""
    app(prog_name="event-backfill")
