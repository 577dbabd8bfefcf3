"""Shared fixtures: a small schema, CSV files written on the fly, a fixed clock."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

# 2026-01-01T00:00:00Z: "now" for tests that check future and old times.
NOW = 1_767_225_600

BASE_SCHEMA: dict[str, Any] = {
    "project_id": {"value": "1234567"},
    "account_id": {"value": "8511325"},
    "user_id": {"column": "user"},
    "event_name": {"column": "event"},
    "experiments": [{"experiment_column": "exp", "variation_column": "var"}],
    "goal_ids": {"column": "goals"},
    "value": {"column": "amount", "scale": 100},
    "time": {"column": "ts", "timezone": "America/New_York"},
    "segments": [{"id": "983745985", "value": "gc"}],
}

HEADER = "user,event,exp,var,goals,amount,ts"
SPEC_ROW = "1316548451038r0,example_event,87654321,1111111,1234567,5.00,1462472175"
SPEC_QUERY = (
    "a=1234567&n=example_event&u=1316548451038r0&x87654321=1111111&v=500&g=1234567"
    "&d=8511325&s983745985=gc&time=1462472175"
)


@pytest.fixture(autouse=True)
def _own_default_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's default ledger is its own file, never the user's data directory."""
    path = tmp_path / "default-ledger" / "ledger.sqlite"
    monkeypatch.setenv("EVENT_BACKFILL_LEDGER", str(path))
    return path


@pytest.fixture
def schema() -> dict[str, Any]:
    """A fresh copy of the base schema dict, safe to modify."""
    return copy.deepcopy(BASE_SCHEMA)


@pytest.fixture
def write_csv(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write lines (header first) to a CSV file and return its path."""

    def write(
        lines: list[str], name: str = "input.csv", *, newline: str = "\n", encoding: str = "utf-8"
    ) -> Path:
        path = tmp_path / name
        path.write_bytes((newline.join(lines) + newline).encode(encoding))
        return path

    return write
