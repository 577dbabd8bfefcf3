"""``-`` as an input: standard input, spooled to a temporary file first.

Reading twice is what makes a run resumable and checkable (the content fingerprint, the total
for progress, the row groups a resume skips), and a pipe cannot be read twice: so the bytes
are copied once to a private temporary file, removed when the process ends. CSV, CSV.gz and
Parquet are told apart by their first bytes.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO

STDIN_NAME = "<stdin>"
_PARQUET_MAGIC = b"PAR1"
_GZIP_MAGIC = b"\x1f\x8b"


# Standard input is read once, whoever opens it; keyed by the stream itself (kept alive).
_spooled: dict[BinaryIO, Path] = {}


def spool(stream: BinaryIO | None = None) -> Path:
    """Copy ``stream`` (default: standard input) to a temporary file named by its format.

    The same stream opened again (``send`` opens its input for the production check, then to
    send) gives the same file.
    """
    source = stream if stream is not None else sys.stdin.buffer
    if source in _spooled:
        return _spooled[source]
    _spooled[source] = path = _copy(source)
    return path


def _copy(source: BinaryIO) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="event-backfill-stdin-"))
    atexit.register(shutil.rmtree, folder, True)
    spooled = folder / "stdin"
    with spooled.open("wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
    with spooled.open("rb") as head:
        magic = head.read(4)
    suffix = ".parquet" if magic == _PARQUET_MAGIC else ".csv"
    suffix += ".gz" if magic[:2] == _GZIP_MAGIC else ""
    return spooled.rename(spooled.with_name("stdin" + suffix))
