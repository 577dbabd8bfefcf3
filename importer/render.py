"""Reports as text for a terminal: the numbers first, then the detail."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from importer.rules import RULES
from importer.times import iso_utc

if TYPE_CHECKING:
    from importer.report import EventStats, Report

_BARS = "▁▂▃▄▅▆▇█"


def render_text(report: Report) -> str:
    """The whole report as lines of text."""
    out: list[str] = []
    sending = report.command not in ("check", "preview")
    out.append(
        f"{report.command}: {report.source}"
        + (f"  (schema {report.schema})" if report.schema else "")
    )
    out += resume_lines(report.extra.get("resume"), report.extra.get("ledger"))
    ledger = report.extra.get("ledger")
    if ledger:
        out.append(f"ledger: {ledger['path']} (run {ledger['run']})")
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
    collector = report.extra.get("collector")
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


def resume_lines(resume: dict[str, Any] | None, ledger: dict[str, Any] | None = None) -> list[str]:
    """What an earlier run of the same command had done, and what that means now."""
    if not resume or not resume["resumed"]:
        return []
    out = [
        f"resumed: {resume['already_sent']:,} already sent, {resume['unknown']:,} unknown "
        f"(run {resume['run_id']})"
    ]
    if resume.get("left"):
        out.append(
            f"  {resume['left']:,} rows the last run left pending (endpoint down, or stopped) "
            "are sent now"
        )
    if resume["unknown"]:
        if resume["policy"] == "resend":
            out.append(
                f"  the {resume['unknown']:,} unknown rows are sent again: at most "
                f"{resume['unknown']:,} events may arrive twice (--unknown skip avoids that)"
            )
        else:
            out.append(
                f"  the {resume['unknown']:,} unknown rows are skipped: at most "
                f"{resume['unknown']:,} events may be missing (--unknown resend avoids that)"
            )
    if resume.get("failed"):
        where = f" --ledger {ledger['path']}" if ledger else ""
        out.append(
            f"  this run holds {resume['failed']:,} rows that failed permanently; once the cause "
            f"is fixed, re-send them with: event-backfill retry{where} --run {resume['run_id']}"
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
