"""The ledger: what a run settled, leased, failed and sent, in a SQLite file.

It knows rows by their position in the source only (never URLs or event values; for the
receipt, each unsettled row's group), so it sits low in the house: ``store`` (the file,
transactions, lock, errors), ``intervals`` (sets of positions as ranges), ``runs`` (the
transitions of a run), ``receipt`` (what a run delivered, per experiment, variation, day,
event and currency) and ``queries`` (what ``status``, ``failures``, ``retry`` and
``receipt`` read).
"""

from importer.ledger.intervals import IntervalSet
from importer.ledger.queries import (
    FailedRow,
    failed_rows,
    failure_origins,
    failures,
    receipts,
    status,
)
from importer.ledger.receipt import RECEIPT_COLUMNS, Receipt
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
    "RECEIPT_COLUMNS",
    "SANDBOX",
    "FailedRow",
    "FileLock",
    "IntervalSet",
    "Leased",
    "LedgerRun",
    "MemoryLedger",
    "Receipt",
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
    "receipts",
    "status",
]
