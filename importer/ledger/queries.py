"""What the ledger remembers, read without taking its lock (safe while a run is going):
one row per run for ``status``, the failed rows for ``failures`` and ``retry``, the runs'
receipts for ``receipt``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from importer.errors import UsageError
from importer.ledger import receipt
from importer.ledger.receipt import Receipt
from importer.ledger.store import in_use, load_ranges, reading

if TYPE_CHECKING:
    import pandas as pd

STATUS_COLUMNS = [
    "run",
    "source",
    "endpoint",
    "state",
    "rows_seen",
    "settled",
    "sent",
    "filtered",
    "rejected",
    "failed",
    "duplicates",
    "unknown",
    "unknown_skipped",
    "created",
    "last_activity",
    "datafile_revision",
]
FAILURE_COLUMNS = ["run", "file", "row", "line", "url", "attempts", "status", "error", "time"]


@dataclass
class FailedRow:
    """A row that failed permanently, as recorded (what ``retry`` sends again)."""

    position: int
    file: str
    row: int
    line: int | None
    url: str
    currency: str | None


def status(path: str | Path) -> pd.DataFrame:
    """One row per run: its source, counts by state, last activity, unknown rows."""
    out = []
    with reading(path) as db:
        runs = db.execute(
            "SELECT id, source_name, endpoint, created, updated, finished, rows_seen, sent, "
            "filtered, rejected, duplicates, unknown_skipped, datafile_revision FROM runs "
            "ORDER BY id"
        ).fetchall()
        for run, name, endpoint, created, updated, finished, *counts, revision in runs:
            seen, sent, filtered, rejected, duplicates, skipped_unknown = counts
            settled, leased = load_ranges(db, run)
            (failed,) = db.execute(
                "SELECT count(*) FROM failures WHERE run_id = ?", (run,)
            ).fetchone()
            out.append(
                [
                    run,
                    name,
                    endpoint,
                    "finished" if finished else "stopped",
                    seen,
                    len(settled),
                    sent,
                    filtered,
                    rejected,
                    failed,
                    duplicates,
                    len(leased),
                    skipped_unknown,
                    _iso(created),
                    _iso(updated),
                    revision,
                ]
            )
    import pandas as pd

    frame = pd.DataFrame(out, columns=STATUS_COLUMNS)
    if in_use(Path(path)) and len(frame):
        frame.loc[frame.index[-1], "state"] = "running"
    return frame


def failures(path: str | Path, *, run: int | None = None) -> pd.DataFrame:
    """The rows that failed permanently, with their last status and error."""
    where, args = ("WHERE run_id = ?", (run,)) if run is not None else ("", ())
    with reading(path) as db:
        rows = db.execute(
            f"SELECT run_id, file, row, line, url, attempts, status, error, time FROM failures "
            f"{where} ORDER BY run_id, position",
            args,
        ).fetchall()
    import pandas as pd

    frame = pd.DataFrame(rows, columns=FAILURE_COLUMNS)
    frame["time"] = frame["time"].map(_iso)
    return frame


def failure_origins(path: str | Path, *, run: int | None = None) -> tuple[int, list[str]]:
    """How many failed rows a retry would send, and their distinct scheme://host:port."""
    where, args = ("WHERE run_id = ?", (run,)) if run is not None else ("", ())
    origins: dict[str, None] = {}
    count = 0
    with reading(path) as db:
        for (url,) in db.execute(f"SELECT url FROM failures {where}", args):
            count += 1
            parts = urlsplit(url)
            origins[f"{parts.scheme}://{parts.netloc}"] = None
    return count, list(origins)


def failed_rows(path: str | Path, *, run: int | None = None) -> dict[int, list[FailedRow]]:
    """The failed rows of one run (or of every run that has some), by run, in input order."""
    where, args = ("WHERE run_id = ?", (run,)) if run is not None else ("", ())
    by_run: dict[int, list[FailedRow]] = {} if run is None else {run: []}
    with reading(path) as db:
        for run_id, *fields in db.execute(
            f"SELECT run_id, position, file, row, line, url, currency FROM failures {where} "
            "ORDER BY run_id, position",
            args,
        ):
            by_run.setdefault(run_id, []).append(FailedRow(*fields))
    return by_run


def receipts(path: str | Path, *, run: int | None = None) -> list[Receipt]:
    """The receipt of one run, or of every run (in run order)."""
    with reading(path) as db:
        runs = [row[0] for row in db.execute("SELECT id FROM runs ORDER BY id")]
        if run is not None:
            if run not in runs:
                raise UsageError(
                    f"{path} holds no run {run}; `event-backfill status --ledger {path}` "
                    "lists its runs"
                )
            runs = [run]
        return [receipt.read(db, run_id) for run_id in runs]


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
