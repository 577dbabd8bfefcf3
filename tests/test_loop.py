"""The loops this package makes are uvloop's when it is installed, unless turned off."""

from __future__ import annotations

import asyncio

import pytest

from importer import loop as loops


async def _kind() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_a_loop_of_our_own_is_uvloops_when_installed() -> None:
    pytest.importorskip("uvloop")
    assert loops.run(_kind()) == "uvloop"


def test_event_backfill_loop_asyncio_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loops.LOOP_ENV, "asyncio")
    assert loops.loop_factory() is None
    assert loops.run(_kind()) == "asyncio"

