"""The --json contract (docs/json.md): every command's output validates against the JSON
Schema shipped for it in importer/contract/, from real runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
from typer.testing import CliRunner

import importer
from importer.cli import app

from .helpers import CollectorProcess, cli

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "importer" / "contract"
SALES = ROOT / "sample_data" / "offline_sales.csv"
SALES_SCHEMA = ROOT / "schemas" / "offline_sales.toml"
BAD = ROOT / "sample_data" / "bad_rows.csv"
BAD_SCHEMA = ROOT / "schemas" / "bad_rows.toml"
runner = CliRunner()


def conforms(output: str, name: str) -> dict[str, Any]:
    """The output is one JSON object that validates against its command's schema."""
    assert "\\/" not in output  # plain json.dumps: no escaped slashes
    data: dict[str, Any] = json.loads(output)
    schema = json.loads((CONTRACT / f"{name}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)
    assert data["version"] == 1
    return data


def json_commands() -> set[str]:
    """Every command path of the app that takes --json, as 'failures export'."""
    found, pending = set(), [((), typer.main.get_command(app))]
    while pending:
        path, command = pending.pop()
        for name, sub in getattr(command, "commands", {}).items():
            pending.append(((*path, name), sub))
        if any("--json" in p.opts for p in getattr(command, "params", [])):
            found.add(" ".join(path))
    return found


def test_every_json_command_has_a_schema_and_docs() -> None:
    documented = (ROOT / "docs" / "json.md").read_text()
    commands = json_commands()
    assert {"check", "preview", "send", "retry", "status", "failures export"} <= commands
    for command in commands:
        assert (CONTRACT / f"{command.replace(' ', '-')}.json").exists(), command
        assert f"`{command}" in documented, command


def test_check_and_preview_conform(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(BAD), "-s", str(BAD_SCHEMA), "--json", "-q"])
    data = conforms(result.stdout, "check")
    assert data["exit_code"] == result.exit_code == 3 and data["rejected"] > 0
    # The numbers are the human report's.
    text = runner.invoke(app, ["check", str(BAD), "-s", str(BAD_SCHEMA), "-q"]).stdout
    assert data["accounting"] in text
    shown = runner.invoke(
        app, ["preview", str(SALES), "-s", str(SALES_SCHEMA), "-n", "3", "--json"]
    )
    data = conforms(shown.stdout, "preview")
    assert data["requests_written"] == len(data["requests"]) == 3
    assert all(url.startswith("https://") for url in data["requests"])
    out = tmp_path / "urls.txt"
    args = ["preview", str(SALES), "-s", str(SALES_SCHEMA), "--out", str(out), "--json", "-q"]
    data = conforms(runner.invoke(app, args).stdout, "preview")
    assert "requests" not in data and len(out.read_text().splitlines()) == data["valid"] == 600


def test_init_and_schema_conform(tmp_path: Path) -> None:
    out = tmp_path / "guess.toml"
    result = runner.invoke(app, ["init", str(SALES), "-o", str(out), "--json"])
    data = conforms(result.stdout, "init")
    assert data["schema_file"] == str(out) and out.read_text() == data["schema"]
    assert "project_id.value" in data["todos"]
    listed = conforms(runner.invoke(app, ["schema", "--list", "--json"]).stdout, "schema")
    assert {"payments", "offline_sales"} <= {e["name"] for e in listed["examples"]}


def test_send_retry_status_and_failures_conform(tmp_path: Path) -> None:
    """A real send with some rows refused by the server, then status, export and retry."""
    ledger = tmp_path / "ledger.sqlite"
    record = tmp_path / "received.ndjson"
    with CollectorProcess(record, "--bad-request-match", "x987654321=") as collector:
        base = ["-s", str(SALES_SCHEMA), "--endpoint", collector.url, "--ledger", str(ledger)]
        sent = cli("send", str(SALES), *base, "--json", "-q")
        data = conforms(sent.stdout, "send")
        assert sent.returncode == data["exit_code"] == 4 and data["failed"] > 0
        assert data["ledger"]["path"] == str(ledger) and data["resume"]["resumed"] is False
        dry = cli("send", str(SALES), *base, "--dry-run", "--json")
        assert conforms(dry.stdout, "preview")["requests_written"] == 600
        status = conforms(cli("status", "--ledger", str(ledger), "--json").stdout, "status")
        assert status["runs"][0]["failed"] == data["failed"]
        export = tmp_path / "failures.csv"
        exported = cli("failures", "export", str(export), "--ledger", str(ledger), "--json")
        assert conforms(exported.stdout, "failures-export")["rows"] == data["failed"]
        retried = cli("retry", "--ledger", str(ledger), "--json", "-q")
        again = conforms(retried.stdout, "retry")
        assert again["rows_read"] == data["failed"] and again["exit_code"] == retried.returncode


@pytest.mark.parametrize("name", ["check", "send", "status"])
def test_a_broken_output_does_not_conform(name: str) -> None:
    """The schemas are strict enough to catch a missing or mistyped key."""
    schema = json.loads((CONTRACT / f"{name}.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": 1, "command": name}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": 2, "command": name}, schema)


def test_the_library_report_carries_the_version() -> None:
    report = importer.check(str(SALES), schema=str(SALES_SCHEMA))
    assert report.to_dict()["version"] == 1


def test_progress_json_is_one_event_per_line_on_stderr(tmp_path: Path) -> None:
    """--progress json: stderr is NDJSON (the --log-file events), stdout the report."""
    log = tmp_path / "log.ndjson"
    args = ["send", str(SALES), "-s", str(SALES_SCHEMA), "--sandbox", "--no-ledger", "--json"]
    result = cli(*args, "--progress", "json", "--status-interval", "0.1", "--log-file", str(log))
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "start" and "finish" in names
    finish = events[names.index("finish")]
    report = conforms(result.stdout, "send")
    assert finish["sent"] == report["sent"] == 600 and finish["exit_code"] == 0
    logged = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert [n for n in names if n not in ("status", "note")] == [
        n for n in logged if n not in ("status", "note")
    ]
