"""The ledger: what a run settled, leased, failed and sent, in a SQLite file.

It knows rows by their position in the source only (never URLs or event values), so it
sits low in the house: ``store`` (the file, transactions, lock, errors), ``intervals``
(sets of positions as ranges), ``runs`` (the transitions of a run) and ``queries`` (what
``status``, ``failures`` and ``retry`` read).
"""

from importer.ledger.intervals import IntervalSet
from importer.ledger.queries import FailedRow, failed_rows, failure_origins, failures, status
from importer.ledger.runs import (
    DEFAULT_FLUSH_ROWS,
    DEFAULT_FLUSH_SECONDS,
    SANDBOX,
    Leased,
    LedgerRun,
    MemoryLedger,
    Resume,
    RetryLedger,
    RunKey,
    SqliteLedger,
    Unknown,
)
from importer.ledger.store import FileLock, connect, in_use, ledger_error, reading

__all__ = [
    "DEFAULT_FLUSH_ROWS",
    "DEFAULT_FLUSH_SECONDS",
    "SANDBOX",
    "FailedRow",
    "FileLock",
    "IntervalSet",
    "Leased",
    "LedgerRun",
    "MemoryLedger",
    "Resume",
    "RetryLedger",
    "RunKey",
    "SqliteLedger",
    "Unknown",
    "connect",
    "failed_rows",
    "failure_origins",
    "failures",
    "in_use",
    "ledger_error",
    "reading",
    "status",
]
