"""Files a run writes beside its report: the rejects (every broken rule), the rejected rows
as read, and the failures export. CSV ones are spreadsheet-safe."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from importer.errors import UsageError
from importer.mapping import Mapped
from importer.schema import CsvOptions
from importer.tables import empty_rejects


class RejectsWriter:
    """Streams rejects to CSV (spreadsheet-safe) or Parquet, a batch at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise UsageError(f"{self.path}: the rejects file must end in .csv or .parquet")
        self.kind = suffix
        self._writer: Any = None
        self.schema = empty_rejects().drop_columns(["position"]).schema

    def write(self, rejects: pa.Table) -> None:
        """Append rejects (as returned by mapping)."""
        table = rejects.drop_columns(["position"])
        if self._writer is None:
            if self.kind == ".csv":
                self._writer = pcsv.CSVWriter(str(self.path), self.schema)
            else:
                self._writer = pq.ParquetWriter(str(self.path), self.schema)
        if self.kind == ".csv":
            table = spreadsheet_safe(table)
        if table.num_rows:
            self._writer.write_table(table)

    def close(self) -> None:
        """Finish the file (an empty one has just the header)."""
        if self._writer is None:
            self.write(empty_rejects())
        self._writer.close()


class RejectedRowsWriter:
    """Writes each rejected row as it was read, plus ``rules`` and ``messages`` columns.

    The file has the input's header (every column, then ``rules`` and ``messages``), the
    schema's delimiter and encoding, and the cells exactly as read: fix the cells and
    import it again with the same schema. Cells are *not* neutralised for spreadsheets
    (that would change them); open it as text, or import it as text columns. A record the
    CSV parser could not split (``csv-malformed``) has its raw text in ``messages``.
    """

    def __init__(self, path: str | Path, columns: list[str], options: CsvOptions) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".csv":
            raise UsageError(f"{self.path}: the rejected rows file must end in .csv")
        self.columns = columns
        delimiter = "," if options.delimiter == "auto" else options.delimiter
        self._handle = self.path.open("w", encoding=options.encoding, newline="")
        self._csv = csv.writer(self._handle, delimiter=delimiter, quotechar=options.quote_char)
        self._csv.writerow([*columns, "rules", "messages"])
        self.count = 0

    def write(self, mapped: Mapped) -> None:
        """Append the rejected rows of one mapped batch, in input order."""
        rejects = mapped.rejects
        if not rejects.num_rows:
            return
        said: dict[int, tuple[list[str], list[str]]] = {}
        for reject in rejects.select(
            ["position", "rule", "column", "message", "value"]
        ).to_pylist():
            rules, messages = said.setdefault(reject["position"], ([], []))
            if reject["rule"] not in rules:
                rules.append(reject["rule"])
            where = f"{reject['column']}: " if reject["column"] else ""
            value = f" (got {reject['value']!r})" if reject["value"] is not None else ""
            messages.append(f"{where}{reject['message']}{value}")
        batch = mapped.batch
        malformed = {m.position: m for m in batch.malformed}
        parsed = sorted(p for p in said if p not in malformed)
        rows: dict[int, list[str]] = {}
        if parsed:  # one take of the rejected rows, not a lookup per cell
            assert batch.data is not None
            index = np.searchsorted(batch.positions, parsed)
            taken = batch.data.select(self.columns).take(pa.array(index)).to_pylist()
            rows = {
                p: [_cell(r[c]) for c in self.columns] for p, r in zip(parsed, taken, strict=True)
            }
        for position in sorted(said):
            rules, messages = said[position]
            if position in malformed:
                cells = [""] * len(self.columns)
                messages.append(f"record as read: {malformed[position].text}")
            else:
                cells = rows[position]
            self._csv.writerow([*cells, ";".join(rules), " | ".join(messages)])
            self.count += 1

    def close(self) -> None:
        """Finish the file."""
        self._handle.close()


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def write_table(table: pa.Table, target: Path) -> None:
    """Write a table to .csv (spreadsheet-safe) or .parquet, by the file's suffix."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix.lower() == ".csv":
            pcsv.write_csv(spreadsheet_safe(table), target)
        else:
            pq.write_table(table, target)
    except OSError as exc:
        raise UsageError(f"{target}: cannot write: {exc.strerror}") from exc


def spreadsheet_safe(table: pa.Table) -> pa.Table:
    """Neutralise text cells a spreadsheet would run as a formula (= + - @, tab, CR)."""
    columns = []
    for column in table.columns:
        if pa.types.is_string(column.type):
            risky = pc.match_substring_regex(column, r"^[=+\-@\t\r]")
            column = pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)
