"""The Python face: the same code path as the CLI, from scripts, loops and notebooks."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import importer
from importer.collector import RunningCollector
from importer.schema import DigitsField, UserIdField

from .conftest import BASE_SCHEMA, NOW


def frame() -> pd.DataFrame:
    """Three rows with pandas nullable dtypes and categoricals; the second has no user."""
    return pd.DataFrame(
        {
            "user": pd.array(["u1", pd.NA, "u3"], dtype="string"),
            "event": pd.Categorical(["buy", "buy", "refund"]),
            "exp": pd.array([87654321, 87654321, 87654321], dtype="Int64"),
            "var": pd.Categorical(["1111111", "1111111", "2222222_3333333"]),
            "goals": pd.array([1234567, None, 1234567], dtype="Int64"),
            "amount": pd.array([5.0, 1.5, 19.99], dtype="Float64"),
            "ts": pd.array([1462472175, 1462472176, 1462472177], dtype="Int64"),
        }
    )


def test_check_a_dataframe_with_nullable_and_categorical_columns() -> None:
    """Nullable ints keep their digits, categoricals are text, NA is empty."""
    report = importer.check(frame(), schema=BASE_SCHEMA, now=NOW)
    assert report.accounting == "rows read 3 = valid 2 + filtered 0 + rejected 1"
    assert report.rejects[["row", "column", "rule"]].to_dict("records") == [
        {"row": 2, "column": "user", "rule": "user-id-empty"}
    ]
    urls = importer.preview(frame(), schema=BASE_SCHEMA, now=NOW)["url"].tolist()
    assert "u=u3&x87654321=2222222_3333333&v=1999&g=1234567" in urls[1]


def test_arrow_table_and_schema_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """An Arrow table, and a schema built in Python from model objects: its options apply."""
    monkeypatch.setenv("TEST_API_SALT", "pepper:")
    schema = importer.Schema(
        **{
            **BASE_SCHEMA,
            "project_id": DigitsField(value="1234567"),
            "user_id": UserIdField(column="user", hash="sha256", salt_env="TEST_API_SALT"),
        }
    )
    table = pa.Table.from_pandas(frame().dropna(subset=["user"]), preserve_index=False)
    report = importer.check(table, schema=schema, now=NOW)
    assert (report.valid, report.rejected) == (2, 0)
    # user_id.hash = "sha256": u is the hex sha256 of salt + id, never the id itself.
    expected = [hashlib.sha256(f"pepper:{user}".encode()).hexdigest() for user in ("u1", "u3")]
    sent = importer.preview(table, schema=schema, now=NOW)
    assert sent["u"].tolist() == expected
    assert all(f"&u={u}&" in url for u, url in zip(expected, sent["url"], strict=True))


def test_schema_mistakes_in_python_read_like_file_mistakes() -> None:
    """Building a bad schema in Python gives the same key-naming message."""
    with pytest.raises(importer.ImporterError) as caught:
        importer.Schema(**{**BASE_SCHEMA, "user_id": {"column": "user", "hsh": "sha256"}})
    assert str(caught.value) == (
        "Schema(...): key 'user_id.hsh': unknown key; this table takes: column, value, "
        "extract, hash, salt_env, allow_email, normalize"
    )


def test_send_inside_a_running_event_loop(tmp_path: Path) -> None:
    """send() called from a coroutine (as in Jupyter) works instead of failing."""
    with RunningCollector() as collector:

        async def notebook_cell() -> Any:
            return importer.send(
                frame(),
                schema=BASE_SCHEMA,
                endpoint=collector.url,
                ledger=tmp_path / "l.sqlite",
                now=NOW,
            )

        report = asyncio.run(notebook_cell())
        assert (report.sent, report.rejected, report.pending) == (2, 1, 0)
        assert len(collector.accepted_queries()) == 2


def test_send_async_and_resume_from_python(tmp_path: Path) -> None:
    """send_async is awaitable; a second call with the same ledger sends nothing."""
    ledger = tmp_path / "l.sqlite"
    with RunningCollector() as collector:
        first = asyncio.run(
            importer.send_async(
                frame(), schema=BASE_SCHEMA, endpoint=collector.url, ledger=ledger, now=NOW
            )
        )
        again = importer.send(
            frame(), schema=BASE_SCHEMA, endpoint=collector.url, ledger=ledger, now=NOW
        )
        assert first.sent == 2
        assert (again.sent, again.skipped_done) == (0, 3)
        assert len(collector.accepted_queries()) == 2
    status = importer.status(ledger=ledger)
    assert status.loc[0, ["sent", "rejected", "state"]].tolist() == [2, 1, "finished"]


def test_failures_and_retry_from_python(tmp_path: Path) -> None:
    """Failures are a DataFrame; retry() sends them once the endpoint accepts them."""
    ledger = tmp_path / "l.sqlite"
    with RunningCollector(faults=importer.Faults(bad_request_match="u=u3")) as collector:
        report = importer.send(
            frame(), schema=BASE_SCHEMA, endpoint=collector.url, ledger=ledger, now=NOW
        )
        assert report.failures[["row", "status", "error"]].to_dict("records") == [
            {"row": 3, "status": 400, "error": "400 Bad Request"}
        ]
        assert importer.failures(ledger=ledger)["status"].tolist() == [400]
        collector.set_faults(importer.Faults())  # the cause is fixed
        retried = importer.retry(ledger=ledger)
        assert (retried.rows_read, retried.sent, retried.pending) == (1, 1, 0)
        assert sum("u=u3" in q for q in collector.accepted_queries()) == 1
    assert importer.failures(ledger=ledger).empty


def test_report_renders_for_notebooks_and_machines() -> None:
    """HTML for a cell, JSON for machines, and a short repr."""
    report = importer.check(frame(), schema=BASE_SCHEMA, now=NOW)
    assert report._repr_html_().startswith(
        "<table><caption>event-backfill check: &lt;dataframe&gt;"
    )
    assert json.loads(json.dumps(report.to_dict()))["rejected_by_rule"] == {"user-id-empty": 1}
    assert (
        repr(report)
        == "<Report check <dataframe>: rows read 3 = valid 2 + filtered 0 + rejected 1>"
    )


def test_library_prints_nothing_in_a_script(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Outside a notebook, progress defaults to nothing: no output at all."""
    with RunningCollector() as collector:
        importer.send(
            frame(), schema=BASE_SCHEMA, endpoint=collector.url, ledger=tmp_path / "l", now=NOW
        )
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "")


def test_rejects_and_failures_of_a_dataframe_carry_its_index_labels(tmp_path: Path) -> None:
    """A notebook selects the bad rows with df.loc[report.rejects["index"]], whatever the index."""
    data = frame().set_axis(["order-9", "order-3", "order-7"])  # labels, not positions
    report = importer.check(data, schema=BASE_SCHEMA, now=NOW)
    assert report.rejects["index"].tolist() == ["order-3"]  # the row without a user
    assert data.loc[report.rejects["index"], "user"].isna().all()
    with RunningCollector(faults=importer.Faults(bad_request_match="u=u3")) as collector:
        sent = importer.send(data, schema=BASE_SCHEMA, endpoint=collector.url, ledger=None, now=NOW)
    assert sent.failures["index"].tolist() == ["order-7"]
    assert data.loc["order-7", "user"] == "u3"
    # A file source has no labels: the column is not there.
    assert (
        "index"
        not in importer.check(pa.Table.from_pandas(data), schema=BASE_SCHEMA, now=NOW).rejects
    )


class Recorded:
    """A Progress that remembers what it was told."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.done = 0
        self.closed_at: int | None = None

    def start(self, total: int | None, unit: str) -> None:
        self.total = total

    def advance(self, rows: int, **counts: int) -> None:
        self.done += rows

    def close(self) -> None:
        self.closed_at = self.done

    def note(self, message: str) -> None:
        return None

    def health(self, last_error: str, silent: float) -> None:
        return None


def test_a_csv_shows_its_total_and_the_last_frame_is_the_report(tmp_path: Path) -> None:
    """The bar knows a CSV's rows up front (% and ETA) and ends on the report's numbers."""
    root = Path(__file__).resolve().parent.parent
    data, schema = (
        root / "sample_data" / "offline_sales.csv",
        root / "schemas" / "offline_sales.toml",
    )
    checked, sent = Recorded(), Recorded()
    report = importer.check(data, schema=schema, progress=checked)
    assert checked.total == report.rows_read == checked.closed_at == 600
    with RunningCollector() as collector:
        result = importer.send(
            data, schema=schema, endpoint=collector.url, ledger=None, progress=sent
        )
    assert sent.total == 600 and sent.closed_at == result.sent == 600


def test_send_counts_very_old_and_future_events_as_check_does() -> None:
    root = Path(__file__).resolve().parent.parent
    data, schema = (
        root / "sample_data" / "offline_sales.csv",
        root / "schemas" / "offline_sales.toml",
    )
    later = 1_800_000_000.0  # 2027: every 2025 sale is more than 365 days old
    checked = importer.check(data, schema=schema, now=later).to_dict()["events"]
    with RunningCollector() as collector:
        sent = importer.send(data, schema=schema, endpoint=collector.url, ledger=None, now=later)
    events = sent.to_dict()["events"]
    assert checked["very_old"] == events["very_old"] == 600
    assert checked["future"] == events["future"] == 0
