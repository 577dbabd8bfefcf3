"""Tests for importer.ledger (its intervals and run ledger) on real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from importer.errors import LedgerError, RunMismatchError
from importer.ledger import RunKey, SqliteLedger
from importer.ledger.intervals import IntervalSet, runs_of
from importer.work import Failure

KEY = RunKey("/data/a.csv", "a.csv", "src1", "schema1", "https://{project_id}.example/event")


@given(st.sets(st.integers(0, 300)), st.sets(st.integers(0, 300)))
def test_interval_set_behaves_like_a_set(added: set[int], removed: set[int]) -> None:
    """add/remove/contains/watermark agree with Python's set."""
    intervals = IntervalSet()
    intervals.add(added)
    intervals.remove(removed)
    expected = added - removed
    probe = np.arange(0, 302)
    assert intervals.contains(probe).tolist() == [p in expected for p in probe]
    assert len(intervals) == len(expected)
    watermark = 0
    while watermark in expected:
        watermark += 1
    assert intervals.watermark() == watermark
    assert all(a < b for a, b in intervals.ranges)


def test_runs_of_merges_consecutive_positions() -> None:
    """Positions become the fewest ranges."""
    assert runs_of([5, 1, 2, 3, 7, 6, 10]) == [(1, 4), (5, 8), (10, 11)]


def test_done_rows_survive_reopening_as_few_ranges(tmp_path: Path) -> None:
    """Acks commit as a watermark plus ranges, not one row per event."""
    path = tmp_path / "l.sqlite"
    ledger = SqliteLedger(path, KEY)
    ledger.lease(list(range(1000)), None)
    ledger.done_many([*range(0, 600), *range(700, 1000)])
    ledger.unsent(list(range(600, 700)), [])
    ledger.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT watermark, sent FROM runs").fetchone() == (600, 900)
    assert db.execute("SELECT kind, start, stop FROM ranges").fetchall() == [("settled", 700, 1000)]
    again = SqliteLedger(path, KEY)
    assert again.resume.resumed and again.resume.already_sent == 900 and again.resume.unknown == 0
    assert again.settled_mask(np.array([599, 600, 699, 700])).tolist() == [True, False, False, True]
    assert again.settled_range(0, 600) and not again.settled_range(0, 601)
    again.close()


@pytest.mark.parametrize("policy", ["resend", "skip"])
def test_leases_left_by_a_crash_are_unknown(tmp_path: Path, policy: str) -> None:
    """Leased, never acknowledged: unknown; resend re-sends them, skip settles them."""
    path = tmp_path / "l.sqlite"
    ledger = SqliteLedger(path, KEY)
    ledger.lease(list(range(10)), None)
    ledger.done_many([0])
    ledger.flush()
    ledger._file_lock.release()  # the process "dies": no close, no release of leases
    again = SqliteLedger(path, KEY, unknown=policy)  # type: ignore[arg-type]
    assert again.resume.unknown == 9
    assert again.settled_mask(np.arange(10)).tolist() == [True] + [policy == "skip"] * 9
    again.close()
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_graceful_stop_keeps_only_ambiguous_rows_leased(tmp_path: Path) -> None:
    """Released rows are plainly pending; rows that may have arrived stay unknown."""
    path = tmp_path / "l.sqlite"
    ledger = SqliteLedger(path, KEY)
    ledger.lease(list(range(5)), None)
    ledger.unsent([0, 1, 2, 3, 4], ambiguous=[3])
    ledger.close()
    assert SqliteLedger(path, KEY).resume.unknown == 1


def test_changed_source_or_schema_is_refused(tmp_path: Path) -> None:
    """Same path, other content or schema: refused with a message about --new-run."""
    path = tmp_path / "l.sqlite"
    SqliteLedger(path, KEY).close()
    changed = RunKey(KEY.source_key, KEY.source_name, "src2", KEY.schema_fingerprint, KEY.endpoint)
    with pytest.raises(
        RunMismatchError, match=r"the file's contents changed since.*pass --new-run"
    ):
        SqliteLedger(path, changed)
    other_schema = RunKey(
        KEY.source_key, KEY.source_name, KEY.source_fingerprint, "s2", KEY.endpoint
    )
    with pytest.raises(RunMismatchError, match="the schema changed since"):
        SqliteLedger(path, other_schema)
    fresh = SqliteLedger(path, changed, new_run=True)
    assert fresh.run_id == 2 and not fresh.resume.resumed
    fresh.close()


def test_one_process_at_a_time(tmp_path: Path) -> None:
    """A second ledger on the same file is refused while the first is open."""
    path = tmp_path / "l.sqlite"
    first = SqliteLedger(path, KEY)
    with pytest.raises(LedgerError, match="is in use by another event-backfill process"):
        SqliteLedger(path, KEY)
    first.close()
    SqliteLedger(path, KEY).close()


def test_dedupe_keys_across_runs(tmp_path: Path) -> None:
    """A key sent by one run is a duplicate in another; released keys are free again."""
    path = tmp_path / "l.sqlite"
    first = SqliteLedger(path, KEY, dedupe=True)
    leased = first.lease([0, 1, 2], ["A", "B", "A"])
    assert leased.duplicates == 1
    assert leased.positions == [0, 1]
    first.done_many([0])
    first.unsent([1], [])  # B never left: its key is free
    first.close()
    other = RunKey("/data/b.csv", "b.csv", "src9", "schema1", KEY.endpoint)
    second = SqliteLedger(path, other, dedupe=True)
    leased = second.lease([0, 1, 2], ["A", "B", "C"])
    assert leased.duplicates == 1
    assert leased.positions == [1, 2]
    second.close()


def test_failures_are_recorded(tmp_path: Path) -> None:
    """A permanent failure settles the row and is kept with its status and error."""
    path = tmp_path / "l.sqlite"
    ledger = SqliteLedger(path, KEY)
    ledger.lease([0], None)
    ledger.failed(Failure(0, "a.csv", 1, None, "u0", 1, 400, "400 Bad Request"))
    ledger.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT position, url, attempts, status, error FROM failures").fetchall() == [
        (0, "u0", 1, 400, "400 Bad Request")
    ]
    assert db.execute("SELECT watermark, failed FROM runs").fetchone() == (1, 1)


def test_dedupe_claims_look_up_each_key_not_every_stored_key(tmp_path: Path) -> None:
    """The owners query runs one primary-key lookup per key of the chunk (a resume with a
    million stored keys must not scan them all for every chunk)."""
    from importer.ledger import connect

    db = connect(tmp_path / "l.sqlite")
    plan = db.execute(
        "EXPLAIN QUERY PLAN SELECT d.key, d.run_id, d.position FROM json_each(?) AS k "
        "CROSS JOIN dedupe_keys AS d ON d.destination = ? AND d.key = k.value ->> 0",
        ("[]", "x"),
    ).fetchall()
    steps = [row[-1] for row in plan]
    assert steps[0].startswith("SCAN k")
    assert "USING PRIMARY KEY (destination=? AND key=?)" in steps[1]
    source = Path(__file__).resolve().parent.parent / "importer" / "ledger" / "runs.py"
    assert "CROSS JOIN dedupe_keys AS d ON d.destination = ? AND d.key" in source.read_text()
