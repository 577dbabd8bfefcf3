"""The run summary: counts that reconcile, totals, and their renderings.

A :class:`Report` is what every entry point returns. Its accounting always holds:
rows read = sent + filtered + rejected + failed + skipped + pending (``check`` and
``preview`` send nothing, so for them rows read = valid + filtered + rejected). It renders
as text (CLI), a dict (``--json``) and HTML (a notebook cell).
"""

from __future__ import annotations

import csv
import html
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from importer.errors import UsageError
from importer.mapping import Mapped, empty_rejects
from importer.schema import CsvOptions
from importer.times import day_of, iso_utc

if TYPE_CHECKING:  # pandas loads only when a DataFrame is asked for: the CLI starts faster
    import pandas as pd

    from importer.sender import Failure

EXAMPLES_PER_RULE = 3
SAMPLE_URLS = 2
MAX_REJECTS_KEPT = 100_000


@dataclass
class EventStats:
    """Counts, value totals and times of a set of events (valid ones, or sent ones).

    ``add_one`` runs once per acknowledged request, so it only touches plain dicts; days are
    kept as day numbers and turned into dates when shown. Values are totalled per event name
    *and currency* (None when the schema has no currency column): minor units of different
    currencies never add up.
    """

    count: int = 0
    first: int | None = None
    last: int | None = None
    day_numbers: dict[int, int] = field(default_factory=dict)
    per_event: Counter[str] = field(default_factory=Counter)
    totals: dict[tuple[str, str | None], list[int]] = field(default_factory=dict)
    future: int = 0
    very_old: int = 0

    @property
    def value_per_event(self) -> Counter[str]:
        """Sum of v per event name; only meaningful without a currency column."""
        out: Counter[str] = Counter()
        for (name, _currency), (_n, value) in self.totals.items():
            out[name] += value
        return out

    @property
    def has_currency(self) -> bool:
        """Whether the events carry a currency (totals are then per currency)."""
        return any(currency is not None for _name, currency in self.totals)

    def _total(self, name: str, currency: str | None, n: int, value: int) -> None:
        slot = self.totals.get((name, currency))
        if slot is None:
            self.totals[name, currency] = [n, value]
        else:
            slot[0] += n
            slot[1] += value

    @property
    def days(self) -> Counter[date]:
        """Events per UTC day."""
        return Counter({day_of(day * 86_400): n for day, n in self.day_numbers.items()})

    def add_table(self, events: pa.Table, *, now: float, old_after: int) -> None:
        """Add the events of a mapped batch (columns n, v, time)."""
        if events.num_rows == 0:
            return
        times = events.column("time").to_numpy()
        self.count += events.num_rows
        low, high = int(times.min()), int(times.max())
        self.first = low if self.first is None else min(self.first, low)
        self.last = high if self.last is None else max(self.last, high)
        days, counts = np.unique(times // 86_400, return_counts=True)
        for day, n in zip(days.tolist(), counts.tolist(), strict=True):
            self.day_numbers[day] = self.day_numbers.get(day, 0) + n
        self.future += int((times > now).sum())
        self.very_old += int((times < now - old_after * 86_400).sum())
        grouped = (
            events.select(["n", "currency", "v"])
            .group_by(["n", "currency"])
            .aggregate([("v", "sum"), ("n", "count")])
        )
        for name, currency, total, n in zip(
            grouped.column("n").to_pylist(),
            grouped.column("currency").to_pylist(),
            grouped.column("v_sum").to_pylist(),
            grouped.column("n_count").to_pylist(),
            strict=True,
        ):
            self.per_event[name] += n
            self._total(name, currency, n, total or 0)

    def add_one(self, name: str, value: int | None, when: int, currency: str | None = None) -> None:
        """Add one event (the sender calls this as each request is acknowledged)."""
        self.count += 1
        if self.first is None or when < self.first:
            self.first = when
        if self.last is None or when > self.last:
            self.last = when
        day = when // 86_400
        self.day_numbers[day] = self.day_numbers.get(day, 0) + 1
        self.per_event[name] += 1
        self._total(name, currency, 1, value or 0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "events": self.count,
            "first": iso_utc(self.first) if self.first is not None else None,
            "last": iso_utc(self.last) if self.last is not None else None,
            "per_day": {d.isoformat(): n for d, n in sorted(self.days.items())},
            "future": self.future,
            "very_old": self.very_old,
            "per_event": {
                name: self._event_dict(name, n) for name, n in sorted(self.per_event.items())
            },
        }

    def _event_dict(self, name: str, count: int) -> dict[str, Any]:
        if not self.has_currency:
            return {"events": count, "value": self.value_per_event.get(name, 0)}
        by_currency = {
            currency or "": {"events": n, "value": value}
            for (event, currency), (n, value) in sorted(
                self.totals.items(), key=lambda item: (item[0][0], item[0][1] or "")
            )
            if event == name
        }
        return {"events": count, "value_by_currency": by_currency}


@dataclass(repr=False)
class Report:
    """What a run did. Counts always reconcile; see :meth:`accounting`.

    Attributes:
        command: "check", "preview", "send" or "retry".
        source: the input's name.
        rows_read: rows of the input accounted for (read, malformed, or skipped unread).
        filtered: rows a schema filter or the time window left out: not conversions, never
            sent, never rejected; see ``filter_counts``.
        valid: rows that passed every rule.
        rejected: rows that broke a rule; see ``rule_counts`` and ``rejects``.
        sent, failed, skipped_done, skipped_duplicate, pending: what sending did.
        rule_counts: how many rows broke each rule (a row may break several).
        stats: counts, times and value totals of valid rows (check) or sent rows (send).
    """

    command: str
    source: str = ""
    schema: str = ""
    rows_read: int = 0
    filtered: int = 0
    valid: int = 0
    rejected: int = 0
    blank_lines: int = 0
    sent: int = 0
    failed: int = 0
    skipped_done: int = 0
    skipped_duplicate: int = 0
    pending: int = 0
    failed_earlier: int = 0  # rows an earlier run of this run left failed (retry re-sends)
    rejected_earlier: int = 0  # rows an earlier run of this run rejected
    rule_counts: Counter[str] = field(default_factory=Counter)
    filter_counts: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    stats: EventStats = field(default_factory=EventStats)
    sample_urls: list[str] = field(default_factory=list)
    rejects_path: str | None = None
    rejects_rows_path: str | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    _rejects: list[pa.Table] = field(default_factory=list, repr=False)
    _rejects_kept: int = 0
    _failures: list[Failure] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:
        return f"<Report {self.command} {self.source}: {self.accounting}>"

    # -- building -----------------------------------------------------------------------

    def add_mapped(self, mapped: Mapped) -> None:
        """Count a mapped batch: rows read, valid, rejected by rule, examples, rejects."""
        batch = mapped.batch
        self.rows_read += batch.num_rows
        self.blank_lines += batch.blank_lines
        self.valid += mapped.events.num_rows
        self.rejected += mapped.rejected
        self.filtered += mapped.filtered_count
        self.filter_counts.update(mapped.filtered_by)
        rejects = mapped.rejects
        if rejects.num_rows:
            self._count_rules(rejects)
            if self._rejects_kept < MAX_REJECTS_KEPT:
                kept = rejects.slice(0, MAX_REJECTS_KEPT - self._rejects_kept)
                self._rejects.append(kept)
                self._rejects_kept += kept.num_rows
        if len(self.sample_urls) < SAMPLE_URLS and mapped.events.num_rows:
            need = SAMPLE_URLS - len(self.sample_urls)
            self.sample_urls += mapped.events.column("url").slice(0, need).to_pylist()

    def _count_rules(self, rejects: pa.Table) -> None:
        pairs = (
            rejects.select(["rule", "position"])
            .group_by("rule")
            .aggregate([("position", "count_distinct")])
        )
        for rule, n in zip(
            pairs.column("rule").to_pylist(),
            pairs.column("position_count_distinct").to_pylist(),
            strict=True,
        ):
            self.rule_counts[rule] += n
            have = self.examples.setdefault(rule, [])
            if len(have) < EXAMPLES_PER_RULE:
                rows = rejects.filter(pc.equal(rejects.column("rule"), rule)).slice(
                    0, EXAMPLES_PER_RULE - len(have)
                )
                have += [
                    {k: r[k] for k in ("file", "row", "line", "column", "value")}
                    for r in rows.to_pylist()
                ]

    def add_failures(self, failures: list[Failure]) -> None:
        """Attach rows that failed permanently (row, status, error...)."""
        self._failures += failures

    # -- views --------------------------------------------------------------------------

    @property
    def rejects(self) -> pd.DataFrame:
        """Every broken rule of every rejected row (up to MAX_REJECTS_KEPT), as a DataFrame."""
        table = pa.concat_tables(self._rejects) if self._rejects else empty_rejects()
        frame: pd.DataFrame = table.drop_columns(["position"]).to_pandas()
        return frame

    @property
    def failures(self) -> pd.DataFrame:
        """Rows that failed permanently, with their last status and error."""
        import pandas as pd

        columns = ["file", "row", "line", "url", "attempts", "status", "error"]
        return pd.DataFrame(
            [{c: getattr(f, c) for c in columns} for f in self._failures], columns=columns
        )

    @property
    def skipped(self) -> int:
        """Rows not sent because they were done already or duplicate a sent key."""
        return self.skipped_done + self.skipped_duplicate

    @property
    def accounting(self) -> str:
        """The line that must always hold."""
        if self.command in ("check", "preview"):
            return (
                f"rows read {self.rows_read:,} = valid {self.valid:,} + filtered "
                f"{self.filtered:,} + rejected {self.rejected:,}"
            )
        return (
            f"rows read {self.rows_read:,} = sent {self.sent:,} + filtered {self.filtered:,} + "
            f"rejected {self.rejected:,} + failed {self.failed:,} + skipped {self.skipped:,} + "
            f"pending {self.pending:,}"
        )

    def balanced(self) -> bool:
        """Whether the accounting line holds."""
        if self.command in ("check", "preview"):
            return self.rows_read == self.valid + self.filtered + self.rejected
        total = (
            self.sent + self.filtered + self.rejected + self.failed + self.skipped + self.pending
        )
        return self.rows_read == total

    @property
    def exit_code(self) -> int:
        """0 all sent; 1 stopped, resumable; 3 finished, some rows rejected (fix the data);
        4 finished, some rows failed permanently (``retry`` once the cause is fixed; 4 wins).

        A resumed run holds what its earlier runs rejected or failed: same code.
        """
        if self.pending:
            return 1
        if self.failed or self.failed_earlier:
            return 4
        return 3 if self.rejected or self.rejected_earlier else 0

    def to_dict(self) -> dict[str, Any]:
        """Everything in the report, JSON-ready."""
        data: dict[str, Any] = {
            "command": self.command,
            "source": self.source,
            "schema": self.schema,
            "rows_read": self.rows_read,
            "valid": self.valid,
            "filtered": self.filtered,
            "rejected": self.rejected,
            "blank_lines": self.blank_lines,
            "filtered_by": dict(self.filter_counts),
            "rejected_by_rule": dict(sorted(self.rule_counts.items())),
            "warnings": self.warnings,
            "examples": self.examples,
            "events": self.stats.to_dict(),
            "sample_urls": self.sample_urls,
            "accounting": self.accounting,
            "balanced": self.balanced(),
            "exit_code": self.exit_code,
            "notes": self.notes,
        }
        if self.command not in ("check", "preview"):
            data.update(
                sent=self.sent,
                failed=self.failed,
                skipped_done=self.skipped_done,
                skipped_duplicate=self.skipped_duplicate,
                pending=self.pending,
                failed_earlier=self.failed_earlier,
                rejected_earlier=self.rejected_earlier,
            )
        if self.rejects_path:
            data["rejects_file"] = self.rejects_path
        if self.rejects_rows_path:
            data["rejects_rows_file"] = self.rejects_rows_path
        data.update(self.extra)
        return data

    def render(self) -> str:
        """The report as text for a terminal."""
        from importer.render import render_text

        return render_text(self)

    def _repr_html_(self) -> str:
        rows = [("rows read", f"{self.rows_read:,}")]
        if self.command in ("check", "preview"):
            rows += [(k, f"{getattr(self, k):,}") for k in ("valid", "filtered", "rejected")]
        else:
            rows += [
                (k, f"{getattr(self, k):,}")
                for k in ("sent", "filtered", "rejected", "failed", "skipped", "pending")
            ]
        rows += [(f"filter {label}", f"{n:,}") for label, n in self.filter_counts.items()]
        rows += [(f"rule {rule}", f"{n:,}") for rule, n in sorted(self.rule_counts.items())]
        if self.stats.first is not None:
            assert self.stats.last is not None
            rows.append(
                ("time range", f"{iso_utc(self.stats.first)} .. {iso_utc(self.stats.last)}")
            )
        for (name, currency), (n, value) in sorted(
            self.stats.totals.items(), key=lambda item: (item[0][0], item[0][1] or "")
        ):
            label = f"event {name}" + (f" ({currency})" if currency else "")
            rows.append((label, f"{n:,} events, v = {value:,}"))
        rows += [("warning", warning) for warning in self.warnings]
        rows += [("note", note) for note in self.notes]
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in rows
        )
        title = html.escape(f"event-backfill {self.command}: {self.source}")
        return (
            f"<table><caption>{title}</caption>{body}</table>"
            f"<p><code>{html.escape(self.accounting)}</code></p>"
        )


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


def spreadsheet_safe(table: pa.Table) -> pa.Table:
    """Neutralise text cells a spreadsheet would run as a formula (= + - @, tab, CR)."""
    columns = []
    for column in table.columns:
        if pa.types.is_string(column.type):
            risky = pc.match_substring_regex(column, r"^[=+\-@\t\r]")
            column = pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)
