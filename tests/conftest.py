"""Shared fixtures: a small schema, CSV files written on the fly, a fixed clock.

And the ``e2e`` marker (see ``pytest_collection_modifyitems``): ``make test-fast`` runs
``-m "not slow and not e2e"``, the unit tests; ``make test`` runs everything.
"""

from __future__ import annotations

import copy
import inspect
import subprocess
import types
from collections.abc import Iterator
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


# -- the e2e marker --------------------------------------------------------------------------
#
# A test is ``e2e`` when it starts another process (the CLI through helpers.cli / start_cli /
# CollectorProcess, openssl, a fresh interpreter...) or belongs to a module of whole runs
# against a real server (E2E_MODULES). Everything else is a unit test and runs in
# ``make test-fast``, so a new test file is in the fast set unless it starts processes.
# Marking is automatic: a test, its fixtures, and the functions and classes of this package
# they name are read for a use of ``subprocess``. ``@pytest.mark.e2e`` by hand works too,
# and a test that is not e2e yet starts a process fails, saying so (``_no_process_in_unit``).

# Modules of end-to-end runs: every test sends whole files through real servers, with real
# waits (Retry-After, back-off, outages) even where no process is started.
E2E_MODULES = frozenset(
    {
        "test_cluster",
        "test_exports",
        "test_hardening",
        "test_notebook",
        "test_outage",
        "test_workers",
        "test_resume",
        "test_safety",
        "test_sending",
    }
)
_PACKAGE = __name__.rpartition(".")[0]


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _ours(target: object) -> bool:
    module = getattr(target, "__module__", None) or ""
    return module == _PACKAGE or module.startswith(_PACKAGE + ".")


def _starts_processes(target: object, seen: set[int]) -> bool:
    """Whether a function or class uses subprocess, itself or through one of ours it names."""
    if id(target) in seen:
        return False
    seen.add(id(target))
    if inspect.isclass(target):
        return any(_starts_processes(v, seen) for v in vars(target).values())
    if isinstance(target, staticmethod | classmethod | property):
        return _starts_processes(getattr(target, "__func__", None) or target.fget, seen)
    inner = getattr(getattr(target, "hypothesis", None), "inner_test", None)  # @given
    function = inspect.unwrap(inner or target)
    if not inspect.isfunction(function):
        return False
    for code in _code_objects(function.__code__):
        for name in code.co_names:
            if name == "subprocess":  # import subprocess, subprocess.run(...)
                return True
            found = function.__globals__.get(name)
            if found is subprocess or getattr(found, "__module__", None) == "subprocess":
                return True
            ours = (inspect.isfunction(found) or inspect.isclass(found)) and _ours(found)
            if ours and _starts_processes(found, seen):
                return True
    return False


def _is_e2e(item: pytest.Function) -> bool:
    if item.module.__name__.rpartition(".")[2] in E2E_MODULES:
        return True
    seen: set[int] = set()
    if _starts_processes(item.function, seen):
        return True
    for name, defs in item._fixtureinfo.name2fixturedefs.items():
        fixture = defs[-1].func
        if name == "_no_process_in_unit" or not _ours(fixture):  # the guard, pytest's own
            continue
        if _starts_processes(fixture, seen):
            return True
    return False


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the end-to-end tests ``e2e``."""
    for item in items:
        if isinstance(item, pytest.Function) and _is_e2e(item):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _no_process_in_unit(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test (not e2e) that starts a process fails: it would slow ``make test-fast``."""
    if request.node.get_closest_marker("e2e") is not None:
        return
    name = request.node.nodeid

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(
            f"{name} starts a process but is not marked e2e: add @pytest.mark.e2e to it "
            "(or its module to E2E_MODULES in tests/conftest.py) so make test-fast leaves it out"
        )

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
