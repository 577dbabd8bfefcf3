"""The ledger file: its tables, connection, transactions, lock, and the one translation of
SQLite's errors into what a user can act on.

Nothing here knows what a row holds: only run ids, positions, ranges and counts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from importer.errors import ImporterError, LedgerDamagedError, LedgerError
from importer.ledger.intervals import IntervalSet

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, source_key TEXT NOT NULL, source_name TEXT NOT NULL,
    source_fingerprint TEXT NOT NULL, schema_fingerprint TEXT NOT NULL, endpoint TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL, finished REAL,
    watermark INTEGER NOT NULL DEFAULT 0, rows_seen INTEGER NOT NULL DEFAULT 0,
    sent INTEGER NOT NULL DEFAULT 0, rejected INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0, duplicates INTEGER NOT NULL DEFAULT 0,
    unknown_skipped INTEGER NOT NULL DEFAULT 0, unknown_resent INTEGER NOT NULL DEFAULT 0,
    filtered INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS runs_by_source ON runs (source_key, endpoint);
CREATE INDEX IF NOT EXISTS runs_by_content ON runs (source_fingerprint, endpoint);
CREATE TABLE IF NOT EXISTS ranges (
    run_id INTEGER NOT NULL, kind TEXT NOT NULL, start INTEGER NOT NULL, stop INTEGER NOT NULL,
    PRIMARY KEY (run_id, kind, start)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS failures (
    run_id INTEGER NOT NULL, position INTEGER NOT NULL, file TEXT, row INTEGER, line INTEGER,
    url TEXT NOT NULL, attempts INTEGER NOT NULL, status INTEGER, error TEXT, time REAL,
    currency TEXT, PRIMARY KEY (run_id, position)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejected_ranges (
    run_id INTEGER NOT NULL, start INTEGER NOT NULL, stop INTEGER NOT NULL,
    PRIMARY KEY (run_id, start)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedupe_keys (
    destination TEXT NOT NULL, key TEXT NOT NULL, run_id INTEGER NOT NULL,
    position INTEGER NOT NULL, PRIMARY KEY (destination, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipt_groups (
    run_id INTEGER NOT NULL, grp INTEGER NOT NULL, experiment TEXT NOT NULL,
    variation TEXT NOT NULL, event TEXT NOT NULL, currency TEXT NOT NULL,
    PRIMARY KEY (run_id, grp, experiment)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipt_days (
    run_id INTEGER NOT NULL, grp INTEGER NOT NULL, day INTEGER NOT NULL,
    events INTEGER NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (run_id, grp, day)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipt_log (
    run_id INTEGER NOT NULL, seq INTEGER NOT NULL, lines BLOB NOT NULL,
    PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
"""
# Columns added after the first release: a ledger written by an older version gains them,
# with the statement that fills them for the rows it already holds (if any). The rows an
# older version sent are in no receipt: ``unreceipted`` counts them, so a receipt says so.
_ADDED_COLUMNS = (
    ("runs", "filtered", "INTEGER NOT NULL DEFAULT 0", None),
    ("failures", "currency", "TEXT", None),
    ("runs", "unreceipted", "INTEGER NOT NULL DEFAULT 0", "UPDATE runs SET unreceipted = sent"),
    ("runs", "datafile_revision", "TEXT", None),  # the last --datafile's revision
)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) a ledger file in WAL mode."""
    with translated(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA_SQL)
        for table, column, kind, fill in _ADDED_COLUMNS:
            if column not in _columns(db, table):
                _add_column(db, table, f"{column} {kind}", fill)
    return db


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _add_column(db: sqlite3.Connection, table: str, column: str, fill: str | None) -> None:
    """Add a column and fill it, in one transaction (or neither happens)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if column.split()[0] not in _columns(db, table):  # another process may have added it
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
            if fill is not None:
                db.execute(fill)
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def reading(path: str | Path) -> Iterator[sqlite3.Connection]:
    """An existing ledger, opened for queries and closed after them (errors translated)."""
    path = Path(path)
    if not path.exists():
        raise LedgerError(f"{path}: no ledger here; `send` creates it, or pass --ledger")
    db = connect(path)
    try:
        with translated(path):
            yield db
    finally:
        db.close()


@contextlib.contextmanager
def translated(path: Path) -> Iterator[None]:
    """Raise SQLite's errors inside the block as the project's (see :func:`ledger_error`)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise ledger_error(path, exc) from exc


def ledger_error(path: Path, exc: sqlite3.Error) -> ImporterError:
    """The one translation of SQLite's errors into what a user can act on."""
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and (
        "malformed" in text or "not a database" in text or "corrupt" in text
    ):
        return LedgerDamagedError(
            f"{path} is damaged or not a ledger (SQLite: {text}); nothing was sent. Move it "
            f"aside (mv '{path}' '{path}.damaged') and restore a backup of it if you have one. "
            "A new ledger knows nothing of what was sent (nor its dedupe keys): the same "
            "command would send every row again; use --since/--until to send only what is "
            "missing."
        )
    if "full" in text or "disk I/O" in text or "readonly" in text or "read-only" in text:
        try:
            free = shutil.disk_usage(path.parent).free
            room = f"{free / 1e6:,.1f} MB free there"
        except OSError:
            room = "free space unknown"
        return LedgerError(
            f"{path}: cannot write the ledger ({text}; {room}). Free some space (a ledger "
            "needs a few MB, plus as much again while it commits) or move it with --ledger, "
            "then run the same command again to resume."
        )
    return LedgerError(f"{path}: cannot use the ledger: {text}")


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, with SQLite errors as the project's."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path

    def __enter__(self) -> None:
        with translated(self.path):
            self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error as error:
                self._rollback()
                raise ledger_error(self.path, error) from error
        self._rollback()
        if isinstance(exc, sqlite3.Error):
            raise ledger_error(self.path, exc) from exc

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
            self.db.execute("ROLLBACK")


def load_ranges(db: sqlite3.Connection, run_id: int) -> tuple[IntervalSet, IntervalSet]:
    """A run's settled rows, and those leased or unknown (not settled) by earlier processes."""
    (watermark,) = db.execute("SELECT watermark FROM runs WHERE id = ?", (run_id,)).fetchone()
    settled = IntervalSet([(0, watermark)])
    leased = IntervalSet()
    for kind, start, stop in db.execute(
        "SELECT kind, start, stop FROM ranges WHERE run_id = ?", (run_id,)
    ):
        (settled if kind == "settled" else leased).add_ranges([(start, stop)])
    return settled, leased.difference(settled)


class FileLock:
    """One process at a time per ledger file; the OS drops the lock if the process dies.

    The lock is taken on the ledger file itself (``flock`` locks the inode), so it holds
    however the file is named: through a symbolic link, a hard link or a relative path. The
    holder's pid is written beside the real file, for the message only. (``flock`` and
    SQLite's own POSIX locks do not interfere.)
    """

    def __init__(self, path: Path) -> None:
        real = path.resolve()
        self.path = real.with_name(real.name + ".lock")
        try:
            real.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(real, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LedgerError(
                f"{path}: cannot create the ledger here ({exc.strerror}); pass another --ledger"
            ) from exc
        try:
            _flock(self._fd, exclusive=True)
        except BlockingIOError:
            os.close(self._fd)
            holder = _read_pid(self.path)
            raise LedgerError(
                f"{path} is in use by another event-backfill process (pid {holder}); wait for "
                "it to finish, or pass a different --ledger"
            ) from None
        with contextlib.suppress(OSError):  # the pid is only for the message
            self.path.write_text(str(os.getpid()))

    def release(self) -> None:
        _unlock(self._fd)
        os.close(self._fd)


def in_use(path: Path) -> bool:
    """Whether a process holds the ledger (status shows that run as running)."""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        _flock(fd, exclusive=False)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _flock(fd: int, *, exclusive: bool) -> None:
    """Lock without waiting (BlockingIOError if held). POSIX only: fcntl is imported here,
    not at the top, so the package imports (and --help runs) on any platform."""
    import fcntl

    fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)


def _unlock(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def _read_pid(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"
