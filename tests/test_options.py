"""One set of options: an option shared by several commands means the same in each."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from importer.cli import app

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = str(ROOT / "schemas" / "offline_sales.toml")
runner = CliRunner()

# Options every command of a kind takes.
READING = {"--schema", "--endpoint", "--since", "--until", "--rejects", "--rejects-rows"}
READING |= {"--json", "--quiet"}
DELIVERING = {"--concurrency", "--rate", "--max-attempts", "--timeout", "--connect-timeout"}
DELIVERING |= {"--give-up-after", "--drain-timeout", "--ledger", "--json", "--quiet", "--yes"}
DELIVERING |= {"--log-file", "--status-interval", "--verbose"}
KINDS = {"check": READING, "preview": READING, "send": READING | DELIVERING, "retry": DELIVERING}


def commands() -> dict[str, Any]:
    """Every leaf command of the app by its path ('failures export')."""
    found, pending = {}, [((), typer.main.get_command(app))]
    while pending:
        path, command = pending.pop()
        subs = getattr(command, "commands", {})
        for name, sub in subs.items():
            pending.append(((*path, name), sub))
        if not subs:
            found[" ".join(path)] = command
    return found


def long_name(param: Any) -> str:
    return next((o for o in param.opts if o.startswith("--")), param.opts[0])


def test_each_kind_of_command_takes_the_same_options() -> None:
    by_command = commands()
    for name, wanted in KINDS.items():
        have = {long_name(p) for p in by_command[name].params if p.param_type_name == "option"}
        assert wanted <= have, f"{name} lacks {sorted(wanted - have)}"


def test_a_shared_option_is_the_same_everywhere() -> None:
    """Same short flags, help, default and type wherever a long option appears."""
    seen: dict[str, tuple[Any, ...]] = {}
    where: dict[str, str] = {}
    for name, command in commands().items():
        if name in ("collector", "init", "schema"):
            continue  # their own options (--port, --out for a schema...), shared with no one
        for param in command.params:
            if param.param_type_name != "option":
                continue
            option = long_name(param)
            shape = (
                tuple(sorted(param.opts)),
                param.help,
                param.default,
                param.is_flag,
            )
            if option in seen:
                assert shape == seen[option], f"{option}: {name} differs from {where[option]}"
            else:
                seen[option], where[option] = shape, name
    assert {"--ledger", "--json", "--timeout", "--rejects"} <= set(seen)


def test_help_examples_fit_on_one_line() -> None:
    """Each help example is one line of the docstring, so copy-paste gets the whole command."""
    for name, command in commands().items():
        lines = [line.strip() for line in (command.help or "").splitlines()]
        examples = [line for line in lines if line.startswith("Example:")]
        assert len(examples) == 1, name
        assert examples[0].startswith(f"Example: event-backfill {name}"), name


def test_dash_reads_standard_input() -> None:
    """`-` reads CSV or Parquet from stdin; the report names it <stdin>; rows as from a file."""
    root, schema = ROOT, SCHEMA
    for name in ("offline_sales.csv", "offline_sales.parquet"):
        data = (root / "sample_data" / name).read_bytes()
        piped = runner.invoke(app, ["check", "-", "-s", schema, "--json", "-q"], input=data)
        from_file = runner.invoke(app, ["check", str(root / "sample_data" / name), "-s", schema])
        assert piped.exit_code == from_file.exit_code == 0, piped.output
        report = json.loads(piped.stdout)
        assert report["source"] == "<stdin>" and report["valid"] == 600


def test_delimiter_and_encoding_on_the_command_line_override_the_schema(tmp_path: Path) -> None:
    root, schema = ROOT, SCHEMA
    with (root / "sample_data" / "offline_sales.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    text = io.StringIO()
    csv.writer(text, delimiter="\t").writerows(rows)
    tabbed = tmp_path / "sales.tsv"
    tabbed.write_bytes(text.getvalue().encode("utf-16"))
    plain = runner.invoke(app, ["check", str(tabbed), "-s", schema, "-q"])
    assert plain.exit_code == 2  # utf-16 read as utf-8: refused, with a hint
    args = ["check", str(tabbed), "-s", schema, "-q", "--json", "--delimiter", "\t"]
    read = runner.invoke(app, [*args, "--encoding", "utf-16"])
    assert read.exit_code == 0, read.output
    assert json.loads(read.stdout)["valid"] == 600
    bad = runner.invoke(app, ["check", str(tabbed), "-s", schema, "--delimiter", ";;"])
    assert bad.exit_code == 2 and "one character" in bad.stderr


def test_help_examples_are_not_wrapped_on_a_narrow_terminal() -> None:
    """Copy-paste from --help gets the whole command, however narrow the terminal."""
    for name, command in commands().items():
        example = next(
            line.strip() for line in (command.help or "").splitlines() if "Example:" in line
        )
        shown = runner.invoke(app, [*name.split(), "--help"], env={"COLUMNS": "40"})
        assert shown.exit_code == 0, name
        assert example in [line.strip() for line in shown.stdout.splitlines()], name


def test_send_reads_standard_input_once_for_the_checks_and_the_send() -> None:
    """`send -` to an endpoint: the production check and the send share one read of stdin."""
    from importer.collector import RunningCollector

    data = (ROOT / "sample_data" / "offline_sales.csv").read_bytes()
    with RunningCollector() as collector:
        args = ["send", "-", "-s", SCHEMA, "--endpoint", collector.url, "--no-ledger", "--json"]
        sent = runner.invoke(app, [*args, "-q"], input=data)
        assert sent.exit_code == 0, sent.output
        assert json.loads(sent.stdout)["sent"] == 600
        assert len(collector.accepted_queries()) == 600
