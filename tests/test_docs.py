"""The README stays true: every rule, command and exit code it promises exists."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from importer.cli import app
from importer.rules import RULES

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_lists_every_rule_with_its_message() -> None:
    """The reject rules table is the rules registry, rule for rule."""
    listed = dict(re.findall(r"^\| `([a-z0-9-]+)` \| (.+) \|$", README, flags=re.M))
    assert {k: v for k, v in listed.items() if k in RULES} == RULES
    assert set(RULES) <= set(listed)


def test_readme_shows_every_command_with_an_example() -> None:
    """Each CLI command appears in a README example."""
    group = typer.main.get_command(app)
    for name in group.commands:  # type: ignore[attr-defined]
        assert f"$ event-backfill {name}" in README, name
    assert "$ event-backfill failures export" in README


def test_readme_has_the_quick_start_commands() -> None:
    """make demo and make test are the two quick-start commands."""
    assert "$ make demo" in README and "$ make test" in README
