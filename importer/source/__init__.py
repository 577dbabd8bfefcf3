"""Input files and frames as a stream of Arrow record batches with row numbers.

One reader serves the CLI and the notebook alike. Every row keeps a stable identity: its
*position* (0-based, across all inputs of a run, the key the ledger uses) and, for people,
its file, 1-based row number and, for CSV, the line it starts on. CSV columns are read as
text, so ids never pass through float. Memory stays flat: files are streamed a batch at a
time, never loaded whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from importer.errors import SourceError
from importer.schema import CsvOptions
from importer.source import stdin
from importer.source.base import DEFAULT_BATCH_SIZE, Batch, Input, Malformed, Settled, Source
from importer.source.csv_input import CsvInput
from importer.source.frame import FrameInput
from importer.source.parquet import ParquetInput

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Batch",
    "CsvInput",
    "FrameInput",
    "Input",
    "Malformed",
    "ParquetInput",
    "Settled",
    "Source",
    "open_source",
]


def open_source(source: Any, *, csv_options: CsvOptions | None = None) -> Source:
    """Turn what a user passed into a :class:`Source`.

    Accepts a path (CSV, CSV.gz, Parquet file or a directory of Parquet files; ``-`` for
    standard input), a list of paths, a pandas DataFrame, a pyarrow Table, or any object with
    ``__arrow_c_stream__``.
    """
    options = csv_options or CsvOptions()
    if isinstance(source, Source):
        return source
    if isinstance(source, str | Path):
        return Source([_open_path(Path(source), options)])
    if isinstance(source, list | tuple) and all(isinstance(s, str | Path) for s in source):
        if not source:
            raise SourceError("no input given: pass at least one file")
        return Source([_open_path(Path(s), options) for s in source])
    return Source([FrameInput(source)])


def _open_path(path: Path, options: CsvOptions) -> Input:
    if str(path) == "-":  # standard input
        opened = _open_path(stdin.spool(), options)
        opened.name = stdin.STDIN_NAME
        return opened
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise SourceError(f"{path}: directory holds no *.parquet files")
        return ParquetInput(path, files)
    if not path.exists():
        raise SourceError(f"{path}: file not found")
    suffixes = "".join(path.suffixes[-2:]).lower()
    if path.suffix.lower() in (".parquet", ".pq"):
        return ParquetInput(path, [path])
    if suffixes.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz")):
        return CsvInput(path, options)
    raise SourceError(
        f"{path}: unknown file type; use .csv, .csv.gz, .tsv, .parquet or a Parquet directory"
    )
