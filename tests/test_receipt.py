"""The receipt: per experiment x variation x UTC day x event x currency, what a run delivered
(importer.ledger.receipt, work.receipt_rows, the report, the `receipt` command), checked
against what a real server received, across kill -9 and resume."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jsonschema
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import importer
from importer import api
from importer.cli import app
from importer.collector import Faults, RunningCollector
from importer.errors import LedgerError
from importer.ledger import MemoryLedger, RetryLedger, RunKey, SqliteLedger, connect
from importer.ledger.receipt import FOLD_FLUSHES, Tally, aggregate
from importer.report import Report, receipt_lines
from importer.run import RunSettings, deliver
from importer.work import Failure, ReceiptRows, receipt_group, receipt_rows

from .conftest import NOW
from .helpers import (
    SALES_SCHEMA,
    CollectorProcess,
    cli,
    reported_unknown,
    schema_toml,
    send_args,
    start_cli,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "importer" / "contract"
KEY = RunKey("/data/a.csv", "a.csv", "src1", "schema1", "http://127.0.0.1/event")
Lines = dict[tuple[str, str, str, str, str | None], tuple[int, int]]

# Rows with one or two experiments, an empty amount now and then, over many UTC days.
HEADER = "order_id,user,event,exp,var,exp2,var2,goals,amount,ts"
SCHEMA: dict[str, Any] = {
    **SALES_SCHEMA,
    "experiments": [
        {"experiment_column": "exp", "variation_column": "var"},
        {"experiment_column": "exp2", "variation_column": "var2", "required": False},
    ],
    "value": {"column": "amount", "scale": 100, "required": False},
}


def rows(count: int) -> list[str]:
    """CSV lines: every 4th order is in a second experiment, every 7th has no amount."""
    return [
        f"ORD-{i:07d},user-{i},{'purchase' if i % 3 else 'signup'},87654321,"
        f"{1111111 + i % 2},{'55555' if i % 4 == 0 else ''},{'777_888' if i % 4 == 0 else ''},"
        f"1234567,{'' if i % 7 == 0 else f'{i % 997 + 1}.{i % 100:02d}'},{NOW - 86_400 - i * 97}"
        for i in range(count)
    ]


def write_rows(path: Path, count: int) -> Path:
    """A CSV of ``count`` orders (see :func:`rows`)."""
    path.write_text("\n".join([HEADER, *rows(count)]) + "\n")
    return path


def server_lines(queries: list[str]) -> Lines:
    """The receipt computed from raw queries alone, as a results page would count them."""
    totals: dict[tuple[str, str, str, str, str | None], list[int]] = {}
    for query in queries:
        params = parse_qsl(query, keep_blank_values=True)
        fields = dict(params)
        day = datetime.fromtimestamp(int(fields["time"]), tz=UTC).date().isoformat()
        for name, variation in params:
            if name.startswith("x"):
                slot = totals.setdefault((name[1:], variation, day, fields["n"], None), [0, 0])
                slot[0] += 1
                slot[1] += int(fields.get("v") or 0)
    return {key: (n, v) for key, (n, v) in totals.items()}


def lines_of(records: list[dict[str, Any]]) -> Lines:
    """Receipt records (``--json``) as a dict comparable with :func:`server_lines`."""
    return {
        (r["experiment"], r["variation"], r["day"], r["event"], r["currency"]): (
            r["events"],
            r["value"],
        )
        for r in records
    }


def conforms(data: dict[str, Any], name: str) -> None:
    """The object validates against the command's JSON Schema."""
    schema = json.loads((CONTRACT / f"{name}.json").read_text())
    jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)


# -- the groups of rows: vectorized against the per-event reference ------------------------

_events = st.lists(
    st.tuples(
        st.lists(
            st.tuples(st.sampled_from(["1", "22", "333"]), st.sampled_from(["4", "5_6"])),
            min_size=1,
            max_size=3,
            unique_by=lambda pair: pair[0],
        ),
        st.integers(-3 * 86_400, 4 * 86_400),
        st.sampled_from(["buy", "=sum(A1)", "näh"]),
        st.one_of(st.none(), st.integers(-(2**62), 2**62)),
        st.sampled_from([None, "USD", "JPY"]),
        st.booleans(),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(_events)
def test_receipt_rows_match_the_per_event_reference(events: list[Any]) -> None:
    """receipt_rows (dictionary codes, numpy) gives each kept row the group receipt_group
    gives it; values are v with null as 0."""
    table = pa.table(
        {
            "position": pa.array(range(len(events)), pa.int64()),
            "x": ["&".join(f"x{e}={v}" for e, v in pairs) for pairs, *_ in events],
            "time": pa.array([e[1] for e in events], pa.int64()),
            "n": [e[2] for e in events],
            "v": pa.array([e[3] for e in events], pa.int64()),
            "currency": pa.array([e[4] for e in events], pa.string()),
        }
    )
    keep = np.array([e[5] for e in events])
    got = receipt_rows(table, keep)
    kept = [(i, e) for i, e in enumerate(events) if e[5]]
    if not kept:
        assert got is None
        return
    assert got is not None
    assert got.positions.tolist() == [i for i, _ in kept]
    assert got.values.tolist() == [e[3] or 0 for _, e in kept]
    expected = [receipt_group("&".join(f"x{a}={b}" for a, b in e[0]), e[2], e[4]) for _, e in kept]
    assert [got.groups[c] for c in got.codes.tolist()] == expected
    assert got.days.tolist() == [e[1] // 86_400 for _, e in kept]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(-2, 2), st.integers(-(2**62), 2**62)),
        max_size=60,
    )
)
def test_aggregate_sums_per_group_and_day_exactly(rows: list[tuple[int, int, int]]) -> None:
    """aggregate (lexsort, reduceat, Python integers near 64 bits) against a Counter; a
    total beyond 64 bits is refused, never wrapped."""
    events: Counter[tuple[int, int]] = Counter()
    values: Counter[tuple[int, int]] = Counter()
    for code, day, value in rows:
        events[code, day] += 1
        values[code, day] += value
    arrays = [np.array(column, np.int64) for column in zip(*rows, strict=True)] or [
        np.empty(0, np.int64)
    ] * 3
    if any(not -(2**63) <= v < 2**63 for v in values.values()):
        with pytest.raises(LedgerError, match="beyond 64 bits"):
            aggregate(arrays[0], arrays[1], np.ones(len(rows), np.int64), arrays[2])
        return
    got = aggregate(arrays[0], arrays[1], np.ones(len(rows), np.int64), arrays[2])
    assert {(c, d): (n, v) for c, d, n, v in got.tolist()} == {
        key: (events[key], values[key]) for key in events
    }


# -- the tally: what settled rows add ---------------------------------------------------------

TWO = ((("1", "2"), ("3", "4_5")), "buy", "USD")
ONE = ((("1", "9"),), "buy", None)


def chunk(positions: list[int], groups: list[Any], days: list[int], values: list[int]) -> Any:
    """ReceiptRows with one group per row, in the order given."""
    return ReceiptRows(
        np.array(positions, np.int64),
        np.arange(len(positions), dtype=np.int64),
        np.array(days, np.int64),
        np.array(values, np.int64),
        groups,
    )


def test_tally_counts_each_pair_once_per_row_and_never_twice() -> None:
    """A row adds to each of its pairs' lines; a row acknowledged twice, a row never
    expected and a forgotten (failed) row add nothing."""
    tally = Tally()
    tally.expect(chunk([10, 11, 12], [TWO, ONE, TWO], [20_000, 20_001, 20_000], [100, 0, 5]))
    delta, counted = tally.take([10, 11, 99])
    assert counted == 2  # 99 was never expected
    assert tally.lines(delta) == {
        ("1", "2", 20_000, "buy", "USD"): [1, 100],
        ("3", "4_5", 20_000, "buy", "USD"): [1, 100],
        ("1", "9", 20_001, "buy", None): [1, 0],
    }
    assert tally.take([10, 11])[1] == 0
    tally.forget([12])
    assert tally.take([12])[1] == 0


def test_tally_merges_chunks_that_a_few_unsettled_rows_keep_alive() -> None:
    """Forty chunks, each with one row left: merged, and each row still counted once."""
    tally = Tally()
    for start in range(0, 40 * 4, 4):
        tally.expect(chunk(list(range(start, start + 4)), [ONE] * 4, [7] * 4, [2] * 4))
        tally.take(list(range(start, start + 3)))
    assert len(tally._chunks) <= 17
    delta, counted = tally.take([start + 3 for start in range(0, 160, 4)] * 2)
    assert counted == 40 and delta.tolist() == [[0, 7, 40, 80]]


# -- the ledger: the same transaction, resume, older ledgers, retry --------------------------


def test_flush_commits_the_receipt_with_the_rows_and_a_resume_adds_to_it(tmp_path: Path) -> None:
    """Acknowledged rows are in the receipt, failed ones not; a later process of the run
    adds to the same lines; rows acknowledged without a group are counted as unreceipted."""
    path = tmp_path / "l.sqlite"
    ledger = SqliteLedger(path, KEY)
    ledger.lease([0, 1, 2], None)
    ledger.expect(chunk([0, 1, 2], [TWO, ONE, ONE], [20_000, 20_001, 20_001], [7, 8, 9]))
    ledger.done_many([0, 1])
    ledger.failed(Failure(2, "a.csv", 3, None, "u2", 1, 400, "400 Bad Request"))
    ledger.close()
    assert ledger.receipt is not None
    assert ledger.receipt.lines == (
        ("1", "2", 20_000, "buy", "USD", 1, 7),
        ("1", "9", 20_001, "buy", None, 1, 8),
        ("3", "4_5", 20_000, "buy", "USD", 1, 7),
    )
    again = SqliteLedger(path, KEY)
    again.lease([3, 4], None)
    again.expect(chunk([3], [ONE], [20_001], [1]))
    again.done_many([3, 4])  # 4: no group (as rows an older version sent)
    again.close()
    (found,) = api.receipts(ledger=path)
    assert found.run == again.run_id == ledger.run_id
    assert ("1", "9", 20_001, "buy", None, 2, 9) in found.lines
    assert (found.sent, found.unreceipted) == (4, 1)


def test_the_log_is_folded_every_so_many_flushes_at_close_and_after_a_crash(
    tmp_path: Path,
) -> None:
    """Each flush logs one blob; every FOLD_FLUSHES flushes and at close the log is folded
    into receipt_days; a process that dies leaves its log, which the receipt reads as it is
    and the next process folds when it opens the run."""
    path = tmp_path / "l.sqlite"
    ledger = SqliteLedger(path, KEY)
    db = sqlite3.connect(path)
    flushes = FOLD_FLUSHES + 3
    for i in range(flushes):
        ledger.lease([i], None)
        ledger.expect(chunk([i], [ONE if i % 2 else TWO], [20_000 + i % 3], [i]))
        ledger.done_many([i])
        ledger.flush()
    assert db.execute("SELECT count(*) FROM receipt_log").fetchone() == (3,)
    ledger._file_lock.release()  # the process dies: no close
    expected = api.receipts(ledger=path)[0]
    assert sum(n for *_, n, _v in expected.lines) == flushes + flushes // 2 + 1  # TWO: 2 pairs
    again = SqliteLedger(path, KEY)
    assert db.execute("SELECT count(*) FROM receipt_log").fetchone() == (0,)
    assert api.receipts(ledger=path)[0] == expected
    again.close()
    assert again.receipt == expected


def test_a_flush_that_fails_records_neither_rows_nor_receipt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receipt and the rows it counts are one transaction: an error after the receipt
    was written rolls both back."""
    path = tmp_path / "l.sqlite"
    ledger = SqliteLedger(path, KEY)
    ledger.lease([0], None)
    ledger.expect(chunk([0], [ONE], [20_001], [5]))
    ledger.done_many([0])

    def broken(**counts: int) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(ledger, "_write_ranges", broken)
    with pytest.raises(LedgerError, match="disk I/O error"):
        ledger.flush()
    db = sqlite3.connect(path)
    for table in ("receipt_groups", "receipt_days", "receipt_log"):
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    assert db.execute("SELECT sent FROM runs").fetchone() == (0,)
    ledger._file_lock.release()  # the process "dies"


def test_an_older_ledger_says_which_sent_rows_no_receipt_holds(tmp_path: Path) -> None:
    """A ledger written before receipts gains the table, and its runs count the rows they
    had sent as unreceipted (in one transaction with the new column)."""
    path = tmp_path / "old.sqlite"
    db = connect(path)
    db.executescript(
        "DROP TABLE receipt_groups; DROP TABLE receipt_days; DROP TABLE receipt_log; "
        "ALTER TABLE runs DROP COLUMN unreceipted;"
    )
    db.execute(
        "INSERT INTO runs (source_key, source_name, source_fingerprint, schema_fingerprint, "
        "endpoint, created, updated, sent) VALUES ('k', 'a.csv', 'f', 's', 'e', 0, 0, 7)"
    )
    db.close()
    (found,) = api.receipts(ledger=path)
    assert (found.sent, found.unreceipted, found.lines) == (7, 7, ())
    assert "  7 rows sent before this ledger kept receipts are not in it" in receipt_lines(
        found, folded=False
    )


def test_retry_adds_the_rows_it_delivers_to_the_receipt(tmp_path: Path) -> None:
    """A failed row sent again by retry is added from its recorded request."""
    path = tmp_path / "l.sqlite"
    ledger = SqliteLedger(path, KEY)
    ledger.lease([0, 1], None)
    url = "http://127.0.0.1/event?a=1&n=buy&u=u&x1=2&x3=4_5&v=12&g=1&d=1&time=1728000000"
    for position in (0, 1):
        ledger.failed(Failure(position, "a.csv", position + 1, None, url, 1, 400, "400", "EUR"))
    ledger.close()
    retry = RetryLedger(path, ledger.run_id)
    retry.done_many([0])
    retry.close()
    (found,) = api.receipts(ledger=path, run=ledger.run_id)
    assert found.lines == (
        ("1", "2", 20_000, "buy", "EUR", 1, 12),
        ("3", "4_5", 20_000, "buy", "EUR", 1, 12),
    )


# -- a real send: the report, the library, the command ---------------------------------------


def test_send_reports_the_receipt_the_server_saw(tmp_path: Path) -> None:
    """send() against a real local server: the report's receipt (JSON, text), the
    DataFrame and the exported files equal the receipt computed from what it received."""
    data = write_rows(tmp_path / "orders.csv", 500)
    ledger = tmp_path / "l.sqlite"
    with RunningCollector() as collector:
        report = importer.send(data, schema=SCHEMA, endpoint=collector.url, ledger=ledger)
        without = importer.send(data, schema=SCHEMA, endpoint=collector.url, ledger=None)
        queries = collector.accepted_queries()
    expected = server_lines(queries[:500])
    assert server_lines(queries[500:]) == expected
    data_json = report.to_dict()
    conforms(data_json, "send")
    assert lines_of(data_json["receipt"]) == expected
    assert lines_of(without.to_dict()["receipt"]) == expected  # --no-ledger: from memory
    text = report.render()
    assert "receipt of run 1, all days (what the results page should show; per day: " in text
    assert "  experiment  variation  event     events" in text
    assert any(line.startswith("  87654321    1111111    purchase") for line in text.splitlines())
    frame = importer.receipt(ledger=ledger)
    assert frame.columns.tolist() == [
        "run",
        "experiment",
        "variation",
        "day",
        "event",
        "currency",
        "events",
        "value",
    ]
    assert frame["events"].sum() == sum(n for n, _ in expected.values())
    assert frame["value"].sum() == sum(v for _, v in expected.values())
    for name in ("r.csv", "r.parquet"):
        assert api.export_receipt(tmp_path / name, ledger=ledger) == len(expected)
    written = pq.read_table(tmp_path / "r.parquet")
    assert written.schema.field("day").type == pa.date32()
    assert (tmp_path / "r.csv").read_text().splitlines()[0] == (
        '"run","experiment","variation","day","event","currency","events","value"'
    )


def test_receipt_command_prints_writes_and_refuses_an_unknown_run(tmp_path: Path) -> None:
    """`receipt` prints per day, --json conforms, --out writes, --run N picks one run."""
    data = write_rows(tmp_path / "orders.csv", 60)
    ledger = tmp_path / "l.sqlite"
    with RunningCollector(faults=Faults()) as collector:
        importer.send(data, schema=SCHEMA, endpoint=collector.url, ledger=ledger)
        expected = server_lines(collector.accepted_queries())
    runner = CliRunner()
    shown = runner.invoke(app, ["receipt", "--ledger", str(ledger)])
    assert shown.exit_code == 0
    assert shown.stdout.splitlines()[1:3] == [
        "receipt of run 1 (60 rows sent):",
        "  experiment  variation  day         event     events       v",
    ]
    as_json = runner.invoke(app, ["receipt", "--ledger", str(ledger), "--run", "1", "--json"])
    data_json = json.loads(as_json.stdout)
    conforms(data_json, "receipt")
    assert lines_of(data_json["runs"][0]["receipt"]) == expected
    out = tmp_path / "receipt.csv"
    written = runner.invoke(app, ["receipt", "--ledger", str(ledger), "--out", str(out)])
    assert written.exit_code == 0 and written.stdout == ""
    assert len(out.read_text().splitlines()) == len(expected) + 1
    missing = runner.invoke(app, ["receipt", "--ledger", str(ledger), "--run", "7"])
    assert missing.exit_code == 2
    assert missing.stderr == (
        f"error: {ledger} holds no run 7; `event-backfill status --ledger {ledger}` lists its "
        "runs\n"
    )


# -- kill -9 and resume, against a collector process ------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "transport, pace",
    [("aiohttp", ["--rate", "4000"]), ("curl", [])],
    ids=["aiohttp-paced", "curl-full-speed"],
)
def test_receipt_after_kill_9_and_resume_equals_what_the_server_received(
    tmp_path: Path, transport: str, pace: list[str]
) -> None:
    """kill -9 twice mid-run, then resume to the end: the ledger's receipt equals the one
    computed from the distinct requests the server received; after each kill it counts
    exactly the rows the ledger settled as sent (the same transaction)."""
    total = 30_000
    data = write_rows(tmp_path / "orders.csv", total)
    schema = schema_toml(tmp_path / "schema.toml", SCHEMA)
    ledger = tmp_path / "ledger.sqlite"
    with CollectorProcess(tmp_path / "received.ndjson") as collector:
        args = send_args(data, schema, collector.url, ledger, "--transport", transport, *pace)
        unknown = 0
        for share in (4, 2):
            process = start_cli(*args)
            try:
                wait_for(
                    lambda share=share, process=process: (
                        sum(collector.accepted().values()) > total // share
                        or process.poll() is not None
                    )
                )
                assert process.poll() is None, "the run ended before the kill"
            finally:
                process.send_signal(signal.SIGKILL)
                unknown += reported_unknown(process.communicate(timeout=30)[1])
            (found,) = api.receipts(ledger=ledger)
            first_pair = sum(line[5] for line in found.lines if line[0] == "87654321")
            assert 0 < first_pair == found.sent < total  # every row has this experiment
        final = cli(*args)
        assert final.returncode == 0, final.stderr
        unknown += reported_unknown(final.stderr)
        received = collector.accepted()
    expected = server_lines(list(received))  # each distinct request once
    report = json.loads(final.stdout)
    assert lines_of(report["receipt"]) == expected
    shown = cli("receipt", "--ledger", str(ledger), "--json")
    assert lines_of(json.loads(shown.stdout)["runs"][0]["receipt"]) == expected
    # What the server counted twice (resent unknown rows) is within the printed bound.
    assert sum(received.values()) - len(received) <= unknown


def test_a_bug_in_the_feed_ends_the_run_instead_of_hanging() -> None:
    """The receipt's groups are computed in the feed (as chunks are leased): an unexpected
    error there (a bug, not an ImporterError) is raised once the run has drained, instead
    of leaving the sender waiting for rows forever."""

    async def feed(sender: Any, ledger_thread: Any) -> None:
        raise RuntimeError("a bug in the feed")

    async def run() -> None:
        await asyncio.wait_for(deliver(feed, MemoryLedger(), Report("send"), RunSettings()), 10)

    with pytest.raises(RuntimeError, match="a bug in the feed"):
        asyncio.run(run())
