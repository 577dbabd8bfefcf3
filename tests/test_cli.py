"""Tests for the CLI: exit codes, exact messages, output files. Through typer's runner."""

from __future__ import annotations

import csv
import json
import re
import tomllib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from importer.cli import app

from .conftest import BASE_SCHEMA, HEADER, SPEC_QUERY, SPEC_ROW
from .helpers import schema_toml_text

runner = CliRunner()


@pytest.fixture
def schema_file(tmp_path: Path) -> Path:
    """The base schema as a TOML file."""
    path = tmp_path / "schema.toml"
    path.write_text(schema_toml_text(BASE_SCHEMA))
    assert tomllib.loads(path.read_text())["user_id"] == {"column": "user"}
    return path


def test_every_command_has_help_with_an_example() -> None:
    """Each command's help carries a runnable example; a group's help lists its commands,
    and each of those carries its own example."""
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert set(commands) >= {"check", "preview", "failures"}
    pending = [((name,), command) for name, command in commands.items()]
    leaves: set[tuple[str, ...]] = set()
    while pending:
        path, command = pending.pop()
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, path
        text = " ".join(result.output.split())  # help is wrapped to the terminal's width
        subcommands = getattr(command, "commands", None)
        if subcommands:  # a group such as `failures`
            listed = text.partition(" Commands: ")[2].split()
            assert set(subcommands) <= set(listed), (path, text)
            pending += [((*path, name), sub) for name, sub in subcommands.items()]
        else:
            assert f"Example: event-backfill {' '.join(path)} " in text, (path, text)
            leaves.add(path)
    assert {("check",), ("failures", "export")} <= leaves


def test_check_all_valid_exits_0(schema_file: Path, write_csv) -> None:  # type: ignore[no-untyped-def]
    """All rows valid: exit 0 and the balanced counts."""
    path = write_csv([HEADER, SPEC_ROW, SPEC_ROW])
    result = runner.invoke(app, ["check", str(path), "--schema", str(schema_file), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "rows read 2 = valid 2 + filtered 0 + rejected 0" in result.stdout
    assert "example_event           2 events   v = 1,000" in result.stdout
    assert SPEC_QUERY in result.stdout


def test_check_with_rejects_exits_3_and_writes_a_safe_file(
    schema_file: Path,
    write_csv,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Rejected rows: exit 3, examples with file and line, a spreadsheet-safe rejects file."""
    formula = "=cmd|' /C calc'!A0"
    path = write_csv(
        [
            HEADER,
            SPEC_ROW,
            f"{formula},e,1,2,3,-5.00,1462472175",  # the user id passes: the amount is rejected
            f"u4,e,1,2,{formula},1.00,1462472175",  # a formula as goal ids: it is the rejected cell
        ]
    )
    out = tmp_path / "rejects.csv"
    result = runner.invoke(
        app, ["check", str(path), "--schema", str(schema_file), "--rejects", str(out), "--quiet"]
    )
    assert result.exit_code == 3, result.output
    assert "rows read 3 = valid 1 + filtered 0 + rejected 2" in result.stdout
    assert f"      {path} line 3, column amount: '-5.00'" in result.stdout
    text = out.read_text()
    assert text.splitlines()[0] == '"file","row","line","column","rule","message","value"'
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    # Only the rejected cells are shown, each neutralised with a leading apostrophe.
    assert [(r["line"], r["column"], r["rule"], r["value"]) for r in rows] == [
        ("3", "amount", "value-negative", "'-5.00"),
        ("4", "goals", "goal-ids-format", f"'{formula}"),
    ]
    with out.open(newline="") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]


def test_check_json(schema_file: Path, write_csv) -> None:  # type: ignore[no-untyped-def]
    """--json prints one JSON document with the counts."""
    path = write_csv([HEADER, SPEC_ROW, ",e,1,2,3,1,1462472175"])
    result = runner.invoke(
        app, ["check", str(path), "--schema", str(schema_file), "--json", "--quiet"]
    )
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert (report["rows_read"], report["valid"], report["rejected"]) == (2, 1, 1)
    assert report["rejected_by_rule"] == {"user-id-empty": 1}
    assert report["balanced"] is True


def test_schema_error_exits_2_naming_file_and_key(tmp_path: Path, write_csv) -> None:  # type: ignore[no-untyped-def]
    """A wrong key: exit 2, one line naming the file and key, no traceback."""
    bad = tmp_path / "bad.toml"
    bad.write_text(schema_toml_text({**BASE_SCHEMA, "value": {"column": "amount", "scael": 100}}))
    result = runner.invoke(app, ["check", str(write_csv([HEADER, SPEC_ROW])), "--schema", str(bad)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {bad}: key 'value.scael': unknown key; this table takes: column, value, scale, "
        "currency_column, thousands_separator, decimal_separator, strip, rounding, "
        "allow_negative, required, extract, currency_extract\n"
    )
    assert result.stdout == ""


def test_missing_column_exits_2(schema_file: Path, write_csv) -> None:  # type: ignore[no-untyped-def]
    """A file without a schema column: exit 2 and the file's columns listed."""
    path = write_csv(["user,event", "u,e"])
    result = runner.invoke(app, ["check", str(path), "--schema", str(schema_file)])
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"error: {path}: missing columns 'goals', 'amount', 'ts', 'exp', 'var' "
    )
    assert "the file has: user, event." in result.stderr


def test_missing_file_exits_2(schema_file: Path, tmp_path: Path) -> None:
    """A file that does not exist."""
    result = runner.invoke(app, ["check", str(tmp_path / "nope.csv"), "--schema", str(schema_file)])
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'nope.csv'}: file not found\n"


def test_preview_prints_one_url_per_line(schema_file: Path, write_csv, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """preview prints the URLs of valid rows; -n limits; --out writes a file."""
    path = write_csv([HEADER, SPEC_ROW, ",e,1,2,3,1,1462472175", SPEC_ROW, SPEC_ROW])
    result = runner.invoke(app, ["preview", str(path), "--schema", str(schema_file), "-n", "2"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert all(
        re.fullmatch(r"https://1234567\.log\.optimizely\.com/event\?" + re.escape(SPEC_QUERY), x)
        for x in lines
    )
    assert result.stderr == "2 requests written; 1 rows rejected (run check to see why)\n"
    out = tmp_path / "urls.txt"
    result = runner.invoke(
        app, ["preview", str(path), "--schema", str(schema_file), "--out", str(out)]
    )
    assert result.exit_code == 0
    assert len(out.read_text().splitlines()) == 3


def test_usage_error_exits_2(write_csv) -> None:  # type: ignore[no-untyped-def]
    """A missing --schema is a usage error."""
    result = runner.invoke(app, ["check", str(write_csv([HEADER]))])
    assert result.exit_code == 2
    assert "Missing option '--schema'" in result.stderr


@pytest.mark.parametrize(
    ("chosen", "expected"), [(None, {"jemalloc", "system"}), ("mimalloc", {"mimalloc"})]
)
def test_console_script_picks_an_allocator_that_returns_memory(
    chosen: str | None, expected: set[str]
) -> None:
    """A fresh process, as the console script starts; a user's ARROW_DEFAULT_MEMORY_POOL wins."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if chosen:
        env["ARROW_DEFAULT_MEMORY_POOL"] = chosen
    code = (
        "from importer._entry import _lean_memory_pool; _lean_memory_pool(); "
        "import pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() in expected


def test_help_and_version_import_no_heavy_package() -> None:
    """--help and --version start at once: no pyarrow, pandas, numpy or aiohttp imported."""
    import subprocess
    import sys

    for flag in ("--help", "--version"):
        probe = (
            "import sys\n"
            "from importer.cli import main\n"
            f"sys.argv = ['event-backfill', '{flag}']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('pyarrow', 'pandas', 'numpy', 'aiohttp') if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)\n"
        )
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert "HEAVY []" in done.stderr, (flag, done.stderr)


def test_status_json_is_plain_json(tmp_path: Path) -> None:
    """status --json: no escaped slashes, numbers as numbers."""
    import json
    import sqlite3

    from importer.ledger import connect

    ledger = tmp_path / "l.sqlite"
    connect(ledger).close()
    with sqlite3.connect(ledger) as db:
        db.execute(
            "INSERT INTO runs (source_key, source_name, source_fingerprint, schema_fingerprint, "
            "endpoint, created, updated) VALUES ('k', 'a/b.csv', 'f', 's', 'http://h/event', 0, 0)"
        )
    result = runner.invoke(app, ["status", "--ledger", str(ledger), "--json"])
    assert result.exit_code == 0
    assert "\\/" not in result.stdout
    (run,) = json.loads(result.stdout)["runs"]
    assert run["endpoint"] == "http://h/event" and run["sent"] == 0
