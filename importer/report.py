"""The run summary: counts that reconcile, totals, and their renderings.

A :class:`Report` is what every entry point returns. Its accounting always holds:
rows read = sent + filtered + rejected + failed + skipped + pending (``check`` and
``preview`` send nothing, so for them rows read = valid + filtered + rejected). It renders
as text (CLI), a dict (``--json``) and HTML (a notebook cell).
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from importer.mapping import Mapped
from importer.rules import RULES
from importer.stats import EventStats
from importer.tables import empty_rejects
from importer.times import iso_utc

if TYPE_CHECKING:  # pandas loads only when a DataFrame is asked for: the CLI starts faster
    import pandas as pd

    from importer.ledger import LedgerRun, Receipt, Resume
    from importer.work import Failure

EXAMPLES_PER_RULE = 3
SAMPLE_URLS = 2
MAX_REJECTS_KEPT = 100_000
RECEIPT_LINES_SHOWN = 40  # lines of the folded receipt in a send report
JSON_VERSION = 1  # of every --json output (docs/json.md): a new key is not a new version


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
    # Delivery (send, retry): filled by the run from the sender's outcome and the ledger.
    unknown: int = 0  # pending rows whose request may have arrived
    retries: int = 0
    maybe_twice: int = 0  # requests sent again after one that may have arrived
    stopped: str | None = None  # None (finished), "interrupted", "gave-up", "aborted", "error"
    # Where the run is recorded and what its earlier runs left (send with a ledger file).
    resume: Resume | None = None
    ledger: LedgerRun | None = None
    collector: dict[str, Any] | None = None  # what the sandbox collector received
    # What the run delivered per experiment, variation, day, event and currency (send): the
    # whole run's, earlier processes of it included (this process's with no ledger file).
    receipt: Receipt | None = None
    # With --datafile: which one (source, revision, project_id, account_id), and the rows of
    # each warning (counted, sent all the same).
    datafile: dict[str, Any] | None = None
    warned_by_rule: dict[str, int] = field(default_factory=dict)
    requests_written: int = 0  # preview: the URLs written
    # A DataFrame source's index: rejects and failures then carry each row's label.
    source_index: Any = field(default=None, repr=False)
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
        return self._labelled(frame)

    @property
    def failures(self) -> pd.DataFrame:
        """Rows that failed permanently, with their last status and error."""
        import pandas as pd

        columns = ["file", "row", "line", "url", "attempts", "status", "error"]
        return self._labelled(
            pd.DataFrame(
                [{c: getattr(f, c) for c in columns} for f in self._failures], columns=columns
            )
        )

    def _labelled(self, frame: pd.DataFrame) -> pd.DataFrame:
        """With a DataFrame source, a first column "index": each row's label in that frame
        (``df.loc[report.rejects["index"]]`` selects the rows)."""
        if self.source_index is not None:
            rows = frame["row"].to_numpy(dtype="int64") - 1
            frame.insert(0, "index", self.source_index.take(rows).to_numpy())
        return frame

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
            "version": JSON_VERSION,
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
            "warned_by_rule": dict(sorted(self.warned_by_rule.items())),
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
        if self.command == "preview":
            data["requests_written"] = self.requests_written
        if self.command not in ("check", "preview"):
            data.update(
                unknown=self.unknown,
                retries=self.retries,
                maybe_twice=self.maybe_twice,
                stopped=self.stopped,
            )
        if self.command == "send":
            data["resume"] = asdict(self.resume) if self.resume is not None else None
        if self.ledger is not None:
            data["ledger"] = asdict(self.ledger)
        if self.collector is not None:
            data["collector"] = self.collector
        if self.datafile is not None:
            data["datafile"] = self.datafile
        if self.receipt is not None:
            data["receipt"] = self.receipt.records()
        return data

    def render(self) -> str:
        """The report as text for a terminal."""
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


# -- the text view ------------------------------------------------------------------------

_BARS = "▁▂▃▄▅▆▇█"


def render_text(report: Report) -> str:
    """The whole report as lines of text."""
    out: list[str] = []
    sending = report.command not in ("check", "preview")
    out.append(
        f"{report.command}: {report.source}"
        + (f"  (schema {report.schema})" if report.schema else "")
    )
    out += resume_lines(report.resume, report.ledger)
    if report.ledger is not None:
        out.append(f"ledger: {report.ledger.path} (run {report.ledger.run})")
    out.append(f"rows read   {report.rows_read:>12,}")
    if sending:
        for label, value in (
            ("sent", report.sent),
            ("filtered", report.filtered),
            ("rejected", report.rejected),
            ("failed", report.failed),
            ("skipped", report.skipped),
            ("pending", report.pending),
        ):
            out.append(f"{label:<11} {value:>12,}")
        if report.skipped:
            out.append(
                f"  ({report.skipped_done:,} done in an earlier run, "
                f"{report.skipped_duplicate:,} duplicate dedupe keys)"
            )
    else:
        out.append(f"valid       {report.valid:>12,}")
        out.append(f"filtered    {report.filtered:>12,}")
        out.append(f"rejected    {report.rejected:>12,}")
    if report.blank_lines:
        out.append(f"  ({report.blank_lines:,} blank lines ignored)")
    if sending and (report.rejected_earlier or report.failed_earlier):
        out.append(
            f"  (this run holds {report.rejected_earlier:,} rows rejected and "
            f"{report.failed_earlier:,} failed by its earlier runs, counted in skipped; "
            "--rejects lists the rejects again)"
        )
    out.append(report.accounting + ("" if report.balanced() else "   << DOES NOT BALANCE: a bug"))
    out += _filters(report)
    out += _rules(report)
    out += _events(report.stats, "sent" if sending else "valid")
    if report.receipt is not None:
        out += receipt_lines(report.receipt, folded=True)
        if (caveat := uncounted(report)) is not None:
            out.append(f"  ({caveat})")
    collector = report.collector
    if collector:
        out.append(
            f"the sandbox collector received {collector['received']:,} requests: "
            f"{collector['accepted']:,} answered 200, "
            f"{collector['invalid']:,} invalid by the spec, "
            f"{collector['duplicates']:,} duplicate queries"
            + (
                ""  # minor units of several currencies do not add up; see the totals above
                if len({currency for _, currency in report.stats.totals}) > 1
                else f", sum of v {collector['value_total']:,}"
            )
        )
    if report.sample_urls:
        out.append("sample requests:")
        out += [f"  {url}" for url in report.sample_urls]
    if report.rejects_path:
        out.append(f"rejects written to {report.rejects_path}")
    if report.rejects_rows_path:
        out.append(
            f"rejected rows written to {report.rejects_rows_path}: fix the cells and import "
            "that file with the same schema"
        )
    out += [f"warning: {warning}" for warning in report.warnings]
    out += report.notes
    return "\n".join(out) + "\n"


def resume_lines(resume: Resume | None, ledger: LedgerRun | None = None) -> list[str]:
    """What an earlier run of the same command had done, and what that means now."""
    if resume is None or not resume.resumed:
        return []
    out = [
        f"resumed: {resume.already_sent:,} already sent, {resume.unknown:,} unknown "
        f"(run {resume.run_id})"
    ]
    if resume.left:
        out.append(
            f"  {resume.left:,} rows the last run left pending (endpoint down, stopped, or held "
            "back by --canary) "
            "are sent now"
        )
    if resume.unknown:
        if resume.policy == "resend":
            out.append(
                f"  the {resume.unknown:,} unknown rows are sent again: at most "
                f"{resume.unknown:,} events may arrive twice (--unknown skip avoids that)"
            )
        else:
            out.append(
                f"  the {resume.unknown:,} unknown rows are skipped: at most "
                f"{resume.unknown:,} events may be missing (--unknown resend avoids that)"
            )
    if resume.failed:
        where = f" --ledger {ledger.path}" if ledger else ""
        out.append(
            f"  this run holds {resume.failed:,} rows that failed permanently; once the cause "
            f"is fixed, re-send them with: event-backfill retry{where} --run {resume.run_id}"
        )
    return out


def _filters(report: Report) -> list[str]:
    if not report.filter_counts:
        return []
    out = ["filtered (not conversions; never sent), by the first filter each row failed:"]
    for label, n in report.filter_counts.items():
        out.append(f"  {n:>9,}  {label}")
    return out


def _rules(report: Report) -> list[str]:
    if not report.rule_counts:
        return []
    out = ["rejected by rule (a row may break several):"]
    for rule, n in sorted(report.rule_counts.items(), key=lambda item: (-item[1], item[0])):
        out.append(f"  {rule:<22} {n:>9,}  {RULES[rule]}")
        for ex in report.examples.get(rule, []):
            where = f"line {ex['line']}" if ex.get("line") is not None else f"row {ex['row']}"
            column = f", column {ex['column']}" if ex.get("column") else ""
            value = f": {ex['value']!r}" if ex.get("value") is not None else ""
            out.append(f"      {ex['file']} {where}{column}{value}")
    return out


def _events(stats: EventStats, label: str) -> list[str]:
    if not stats.count or stats.first is None or stats.last is None:
        return []
    out = [f"time range of {label} events: {iso_utc(stats.first)} .. {iso_utc(stats.last)} (UTC)"]
    out += histogram(stats.days)
    if label == "valid":
        out.append(f"  in the future (within the allowed skew): {stats.future:,}")
        out.append(f"  very old (older than checks.old_after_days): {stats.very_old:,}")
    if not stats.has_currency:
        out.append(f"totals of v per event name ({label}):")
        width = max(len(name) for name in stats.per_event)
        for name, n in sorted(stats.per_event.items()):
            out.append(
                f"  {name:<{width}}  {n:>10,} events   v = {stats.value_per_event.get(name, 0):,}"
            )
        return out
    out.append(f"totals of v per event name and currency ({label}; v in minor units):")
    width = max(len(name) for name in stats.per_event)
    for (name, currency), (n, value) in sorted(
        stats.totals.items(), key=lambda item: (item[0][0], item[0][1] or "")
    ):
        out.append(f"  {name:<{width}}  {currency or '?':<3}  {n:>10,} events   v = {value:,}")
    return out


def uncounted(report: Report) -> str | None:
    """The receipt's caveat when the datafile warned that sent events will not count."""
    n = report.warned_by_rule.get("goal-not-in-experiment", 0)
    if not n:
        return None
    return (
        f"{n:,} of these events were sent with a goal not attached to an experiment of their "
        "row (warning goal-not-in-experiment): they are in this receipt, but that "
        "experiment's results page will not count them"
    )


def receipt_lines(receipt: Receipt, *, folded: bool) -> list[str]:
    """A receipt as a table: per UTC day, or with the days folded (per experiment and
    variation, event and currency), as a send report shows it."""
    which = "this process's (no ledger file)" if receipt.run is None else f"run {receipt.run}"
    if folded:
        where = f"; per day: event-backfill receipt --run {receipt.run}"
        out = [
            f"receipt of {which}, all days (what the results page should show"
            f"{'' if receipt.run is None else where}):"
        ]
        headers = ["experiment", "variation", "event", "currency", "events", "v"]
        rows: list[tuple[Any, ...]] = receipt.folded()
    else:
        from importer.ledger.receipt import iso_day

        out = [f"receipt of {which} ({receipt.sent:,} rows sent):"]
        headers = ["experiment", "variation", "day", "event", "currency", "events", "v"]
        rows = [(*line[:2], iso_day(line[2]), *line[3:]) for line in receipt.lines]
    if rows:
        out += _receipt_table(headers, rows, folded=folded, run=receipt.run)
    else:
        out.append("  nothing delivered yet")
    if receipt.unreceipted:
        out.append(
            f"  {receipt.unreceipted:,} rows sent before this ledger kept receipts are not in it"
        )
    if receipt.unknown_skipped:
        out.append(
            f"  {receipt.unknown_skipped:,} rows skipped as unknown (--unknown skip; they may "
            "have arrived) are not in it"
        )
    return out


def _receipt_table(
    headers: list[str], rows: list[tuple[Any, ...]], *, folded: bool, run: int | None
) -> list[str]:
    if not any(row[-3] for row in rows):  # no currency column: leave the column out
        headers = [h for h in headers if h != "currency"]
        rows = [(*row[:-3], *row[-2:]) for row in rows]
    shown = rows[:RECEIPT_LINES_SHOWN] if folded else rows
    out = _table(headers, shown)
    if len(shown) < len(rows):
        which = "" if run is None else f" --run {run}"
        out.append(f"  ... {len(rows) - len(shown):,} more lines: event-backfill receipt{which}")
    money = "; v in minor units of each currency" if "currency" in headers else ""
    out.append(f"  (an event counts once in each experiment it is in; an empty v adds 0{money})")
    return out


def _table(headers: list[str], rows: list[tuple[Any, ...]]) -> list[str]:
    """Columns aligned: numbers right, text left, thousands separated."""
    cells = [
        [f"{v:,}" if isinstance(v, int) else ("" if v is None else str(v)) for v in row]
        for row in rows
    ]
    numeric = [isinstance(v, int) for v in rows[0]]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        padded = (
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        )
        return ("  " + "  ".join(padded)).rstrip()

    return [line(headers), *(line(row) for row in cells)]


def histogram(days: Counter[date]) -> list[str]:
    """Events per UTC day, one line per month, one bar character per day ('·' for none)."""
    if not days:
        return []
    peak = max(days.values())
    first, last = min(days), max(days)
    out = [f"  events per day (each character is one day; █ = {peak:,}):"]
    month = date(first.year, first.month, 1)
    while month <= last:
        following = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
        cells, total = [], 0
        day = month
        while day < following:
            n = days.get(day, 0)
            total += n
            cells.append(
                "·" if n == 0 else _BARS[min(len(_BARS) - 1, (n * len(_BARS) - 1) // peak)]
            )
            day += timedelta(days=1)
        out.append(f"  {month:%Y-%m} {''.join(cells):<31} {total:>10,}")
        month = following
    return out


def gate_banner(
    report: Report, hosts: tuple[str, ...], project_ids: tuple[str, ...], ledger: Any
) -> str:
    """What a send to a real endpoint is about to do, for the confirmation on stderr."""
    stats = report.stats
    out = ["about to SEND TO A REAL ENDPOINT (not loopback):"]
    out.append(f"  hosts: {', '.join(hosts[:10])}" + (" ..." if len(hosts) > 10 else ""))
    if project_ids:
        shown = ", ".join(project_ids[:10]) + (" ..." if len(project_ids) > 10 else "")
        out.append(f"  project ids: {shown}")
    out.append(
        f"  rows to send: {report.valid:,} of {report.rows_read:,} read from {report.source} "
        f"({report.filtered:,} filtered, {report.rejected:,} rejected)"
    )
    if stats.first is not None and stats.last is not None:
        out.append(f"  time range: {iso_utc(stats.first)} .. {iso_utc(stats.last)} (UTC)")
    for (name, currency), (n, value) in sorted(
        stats.totals.items(), key=lambda item: (item[0][0], item[0][1] or "")
    ):
        money = f"{currency} " if currency else ""
        out.append(f"  {name}: {n:,} events, v = {money}{value:,}")
    if ledger is not None:
        out.append(f"  ledger: {ledger} (rows it already settled are not sent again)")
    return "\n".join(out)
