"""The retry path through the transport seam: a real ledger file, a scripted transport."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from yarl import URL

from importer.errors import PermanentError, TransientError
from importer.ledger import RunKey, SqliteLedger
from importer.options import SendOptions
from importer.resend import retry_async, works_of
from importer.run import RunSettings
from importer.work import Failure
from tests.virtual_clock import run_virtual

KEY = RunKey("/data/a.csv", "a.csv", "src1", "schema1", "http://127.0.0.1:9/event")


def url(position: int, value: int = 250) -> str:
    return f"http://127.0.0.1:9/event?a=1&n=purchase&u=user-{position}&v={value}&time=1700000000"


class Scripted:
    """Answers each URL by its user: 2xx, an error status, or a refused connection."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.sent: list[str] = []

    async def __aenter__(self) -> Scripted:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def get(self, target: URL) -> None:
        self.sent.append(str(target))
        answer = self.answers.get(target.query["u"], "200")
        if answer == "refused":
            raise TransientError("cannot connect: refused", maybe_delivered=False)
        if answer != "200":
            raise PermanentError(f"{answer} Bad Request", status=int(answer), maybe_delivered=False)


def failed_run(path: Path, positions: list[int], file: str = "a.csv") -> None:
    """A run whose rows at ``positions`` failed permanently, as `send` leaves it."""
    ledger = SqliteLedger(path, KEY)
    ledger.lease(positions, None)
    for p in positions:
        ledger.failed(Failure(p, file, p + 1, p + 2, url(p), 3, 500, "500 Server Error", "EUR"))
    ledger.close(finished=True)


def retry(path: Path, transport: Scripted) -> Any:
    """``retry`` of every run, on virtual time: its backoff and give-up take no real time."""
    settings = RunSettings(options=SendOptions(), transport=lambda _: transport)
    return run_virtual(retry_async(path, settings))


def test_retry_settles_what_succeeds_and_keeps_what_fails_again(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    failed_run(path, [0, 1, 2, 3])
    transport = Scripted({"user-1": "400", "user-3": "422"})
    report = retry(path, transport)
    assert sorted(transport.sent) == sorted(url(p) for p in range(4))
    assert (report.rows_read, report.sent, report.failed, report.pending) == (4, 2, 2, 0)
    assert report.balanced()
    # The totals come from the recorded URLs: two purchases of 250 minor units in EUR.
    assert report.stats.totals == {("purchase", "EUR"): [2, 500]}
    with sqlite3.connect(path) as db:
        left = db.execute("SELECT position, attempts, status, error FROM failures").fetchall()
        sent, failed = db.execute("SELECT sent, failed FROM runs").fetchone()
    assert left == [(1, 4, 400, "400 Bad Request"), (3, 4, 422, "422 Bad Request")]
    assert (sent, failed) == (2, 2)
    again = retry(path, Scripted({}))  # the cause is fixed: the rest go
    assert (again.rows_read, again.sent) == (2, 2)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM failures").fetchone() == (0,)
        assert db.execute("SELECT sent, failed FROM runs").fetchone() == (4, 0)


def test_retry_during_an_outage_keeps_every_failure(tmp_path: Path) -> None:
    """Nothing answers: the retry gives up resumably; no failure is lost or doubled."""
    path = tmp_path / "ledger.sqlite"
    failed_run(path, [5, 6])
    refused = Scripted({"user-5": "refused", "user-6": "refused"})
    report = retry(path, refused)
    assert report.stopped == "gave-up"
    assert (report.sent, report.failed, report.pending) == (0, 0, 2)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT position, attempts FROM failures").fetchall() == [(5, 3), (6, 3)]


def test_works_of_groups_rows_by_file_in_input_order() -> None:
    from importer.ledger import FailedRow

    rows = [
        FailedRow(0, "a.csv", 1, 2, url(0), None),
        FailedRow(3, "b.csv", 4, None, url(3, 7), "USD"),
        FailedRow(1, "a.csv", 2, 3, url(1), None),
    ]
    works = works_of(rows)
    assert [(w.file, w.positions) for w in works] == [("a.csv", [0, 1]), ("b.csv", [3])]
    assert works[1].values == [7] and works[1].currencies == ["USD"] and works[1].lines == [None]
    assert works[0].names == ["purchase", "purchase"] and works[0].times == [1700000000] * 2
