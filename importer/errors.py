"""One exception tree for event-backfill.

Every error a user can see is an :class:`ImporterError`; its message names the file, row,
column or key involved and says what to do next. ``exit_code`` is what the CLI exits with::

    ImporterError
    ├── UsageError                 exit 2: nothing was read or sent
    │   ├── SchemaError            a schema file or dict is wrong (names the file and key)
    │   ├── LedgerDamagedError     the ledger file is damaged: move it aside
    │   └── SourceError            an input file is missing, unreadable or lacks a column
    └── StoppedError               exit 1: the run stopped and can be resumed
        ├── LedgerError            the ledger file cannot be used (locked, corrupt, not ours)
        │   └── RunMismatchError   same path, different file or schema: needs --new-run
        └── EndpointDownError      nothing succeeded for --give-up-after seconds

    DeliveryError                  one failed attempt to deliver a request (internal)
    ├── TransientError             worth retrying: connection errors, timeouts, 408/425/429/5xx
    └── PermanentError             any other non-2xx: the row fails with its status

Third-party exceptions (aiohttp, pyarrow, sqlite3) are translated where they are caught,
always with ``raise ... from exc``.
"""

from __future__ import annotations


class ImporterError(Exception):
    """The root of every error event-backfill reports to a user."""

    exit_code = 2


class UsageError(ImporterError):
    """The command, its options or its inputs are wrong; nothing was sent."""

    exit_code = 2


class SchemaError(UsageError):
    """A schema file or dict is wrong; the message names the file and the key."""

    def __init__(self, message: str, *, origin: str = "schema", key: str | None = None) -> None:
        where = f"{origin}: key '{key}'" if key else origin
        super().__init__(f"{where}: {message}")
        self.origin = origin
        self.key = key


class LedgerDamagedError(UsageError):
    """The ledger file is not a readable SQLite database (damaged, or not a ledger)."""


class SourceError(UsageError):
    """An input file cannot be read as the schema needs it."""


class StoppedError(ImporterError):
    """The run stopped before the end; running the same command again resumes it."""

    exit_code = 1


class LedgerError(StoppedError):
    """The ledger file cannot be used."""


class RunMismatchError(LedgerError):
    """The ledger holds progress for a different file or schema under the same name."""


class EndpointDownError(StoppedError):
    """Nothing was delivered for too long: the endpoint looks down."""


class DeliveryError(Exception):
    """One attempt to deliver one request failed.

    Attributes:
        status: the HTTP status, or None when no response came.
        reason: a short human text (``"503 Service Unavailable"``, ``"connection refused"``).
        retry_after: seconds the server asked us to wait, if it said so.
        maybe_delivered: False when resending cannot duplicate the event: the connection
            could not be opened, or the server answered with an error status (it said it
            did not take the event). True when the request was cut off or timed out after it
            was written.
    """

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        maybe_delivered: bool = True,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.maybe_delivered = maybe_delivered


class TransientError(DeliveryError):
    """Worth retrying after a pause."""


class PermanentError(DeliveryError):
    """Retrying will not help: the row fails with this status."""
