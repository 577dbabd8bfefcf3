"""The page of the HTML run report: its sections in order, tables, style, and the Bokeh
document that carries the charts. :mod:`importer.html_report` is the way in."""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from importer.mapping import WINDOW_FILTER
from importer.report import uncounted
from importer.rules import RULES
from importer.times import iso_utc

if TYPE_CHECKING:
    from bokeh.plotting import figure

    from importer.html_data import Line
    from importer.ledger.receipt import Receipt
    from importer.report import Report

MAX_EXPERIMENT_CHARTS = 12  # the experiments with most events get a chart; the table has all
MAX_DAY_LINES = 5_000  # lines of the per-day receipt table (a year of 14 variations ~ 5k)
_REJECTED, _FILTERED = "#c0392b", "#7f8c8d"
_FILTER = "a schema filter: not a conversion, never sent, not rejected"
_WINDOW = "outside the time window: not sent now; a run with another window sends them"


class Page:
    """The sections of the page in order: HTML, each optionally followed by a chart."""

    def __init__(self, report: Report, lines: list[Line], receipt: Receipt | None) -> None:
        self.report = report
        self.lines = lines
        self.receipt = receipt
        self.parts: list[tuple[str, figure | None]] = []

    def document(self) -> str:
        self._header()
        self._accounting()
        self._daily()
        self._value()
        self._rules()
        self._receipt()
        self._remarks()
        charts = [chart for _text, chart in self.parts if chart is not None]
        title = f"event-backfill {self.report.command}: {self.report.source}"
        if not charts:  # nothing to draw: no JavaScript at all
            body = "".join(text for text, _chart in self.parts)
            return (
                f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
                f"<body><main>{body}</main></body></html>"
            )
        return _bokeh_page(self.parts, charts, title)

    def add(self, text: str, chart: figure | None = None) -> None:
        self.parts.append((text, chart))

    def _header(self) -> None:
        r = self.report
        facts = [("schema", r.schema)] if r.schema else []
        if r.ledger is not None:
            facts.append(("ledger", f"{r.ledger.path} (run {r.ledger.run})"))
        if r.stats.first is not None and r.stats.last is not None:
            which = "valid" if r.command in ("check", "preview") else "sent"
            span = f"{iso_utc(r.stats.first)} .. {iso_utc(r.stats.last)}"
            facts.append((f"time range of {which} events (UTC)", span))
        if r.stopped:
            facts.append(("stopped", r.stopped))
        facts.append(("exit code", str(r.exit_code)))
        facts.append(("page made", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")))
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
        self.add(
            f"<h1>event-backfill {_e(r.command)}: <span class='source'>{_e(r.source)}</span>"
            f"</h1><table class='facts'>{rows}</table>"
        )

    def _accounting(self) -> None:
        r = self.report
        if r.command in ("check", "preview"):
            keys = ["valid", "filtered", "rejected"]
        else:
            keys = ["sent", "filtered", "rejected", "failed", "skipped", "pending"]
        tiles = [("rows read", r.rows_read)] + [(k, getattr(r, k)) for k in keys]
        cells = "".join(
            f"<div class='tile {_e(k.replace(' ', '-'))}'><div class='n'>{n:,}</div>"
            f"<div class='k'>{_e(k)}</div></div>"
            for k, n in tiles
        )
        mark = "holds" if r.balanced() else "DOES NOT HOLD"
        self.add(
            f"<section id='accounting'><h2>Accounting</h2><div class='tiles'>{cells}</div>"
            f"<p class='accounting'><code>{_e(r.accounting)}</code> "
            f"<span class='{'ok' if r.balanced() else 'bad'}'>({mark})</span></p></section>"
        )

    def _daily(self) -> None:
        from importer import html_charts as charts

        found = charts.daily(self.lines, self.report.stats.day_numbers, MAX_EXPERIMENT_CHARTS)
        if not found.figures:
            return
        self.add(f"<section id='daily'><h2>Events per UTC day</h2><p>{_e(found.caption)}</p>")
        for chart in found.figures:
            self.add("", chart)
        self.add("</section>")

    def _value(self) -> None:
        from importer import html_charts as charts

        found = charts.value(self.lines, self.report.stats.totals)
        if not found.figures:
            return
        self.add(f"<section id='value'><h2>Value per currency</h2><p>{_e(found.caption)}</p>")
        for chart in found.figures:
            self.add("", chart)
        self.add("</section>")

    def _rules(self) -> None:
        from importer import html_charts as charts

        r = self.report
        if not r.rule_counts and not r.filter_counts:
            return
        rows = [
            f"<tr><td>rejected</td><td><code>{_e(rule)}</code></td><td class='n'>{n:,}</td>"
            f"<td>{_e(RULES.get(rule, ''))}{_examples(r.examples.get(rule, []))}</td></tr>"
            for rule, n in sorted(r.rule_counts.items(), key=lambda item: (-item[1], item[0]))
        ]
        rows += [
            f"<tr><td>filtered</td><td>{_e(label)}</td><td class='n'>{n:,}</td>"
            f"<td>{_WINDOW if label == WINDOW_FILTER else _FILTER}</td></tr>"
            for label, n in r.filter_counts.items()
        ]
        self.add(
            "<section id='rules'><h2>Rejected and filtered rows, by rule</h2>"
            f"<p>{r.rejected:,} rows rejected (a row may break several rules), "
            f"{r.filtered:,} filtered (by the first filter each row failed).</p>",
            charts.rules(r.rule_counts, r.filter_counts, _REJECTED, _FILTERED),
        )
        self.add(
            "<table class='data'><thead><tr><th></th><th>rule</th><th>rows</th>"
            f"<th>meaning, first examples</th></tr></thead><tbody>{''.join(rows)}</tbody>"
            "</table></section>"
        )

    def _receipt(self) -> None:
        if not self.lines and self.receipt is None:
            return
        which = ""
        if self.receipt is not None:
            which = (
                " (this process's: no ledger file)"
                if self.receipt.run is None
                else (f" of run {self.receipt.run}")
            )
        out = [
            f"<section id='receipt'><h2>Receipt{_e(which)}</h2>",
            "<p>What the results page should show: an event counts once in each experiment "
            "it is in; an empty v adds 0; v is in minor units of each currency.</p>",
        ]
        if not self.lines:
            out.append("<p>nothing delivered yet</p>")
        else:
            out.append(_folded_table(self.lines))
            out.append(_daily_table(self.lines, self.receipt))
        if self.receipt is not None and self.receipt.unreceipted:
            out.append(
                f"<p>{self.receipt.unreceipted:,} rows sent before this ledger kept receipts "
                "are not in it.</p>"
            )
        if self.receipt is not None and self.receipt.unknown_skipped:
            out.append(
                f"<p>{self.receipt.unknown_skipped:,} rows skipped as unknown (--unknown skip; "
                "they may have arrived) are not in it.</p>"
            )
        if (caveat := uncounted(self.report)) is not None:
            out.append(f"<p>{_e(caveat[0].upper() + caveat[1:])}.</p>")
        self.add("".join(out) + "</section>")

    def _remarks(self) -> None:
        r = self.report
        items = [f"<li class='warning'>warning: {_e(w)}</li>" for w in r.warnings]
        items += [f"<li>{_e(note)}</li>" for note in r.notes]
        if r.collector is not None:
            got = r.collector
            items.append(
                f"<li>the sandbox collector received {got.get('received', 0):,} requests, "
                f"{got.get('accepted', 0):,} accepted, {got.get('invalid', 0):,} invalid by the "
                f"spec, sum of v {got.get('value_total', 0):,}</li>"
            )
        if items:
            self.add(f"<section id='notes'><h2>Notes</h2><ul>{''.join(items)}</ul></section>")


def _bokeh_page(parts: list[tuple[str, figure | None]], charts: list[figure], title: str) -> str:
    """The page with Bokeh: its JavaScript inlined, each chart embedded where it belongs.

    Text goes in as template variables, never into the template's source, so a source name
    with ``{{`` in it is text, not Jinja.
    """
    from bokeh.embed import file_html
    from bokeh.resources import INLINE
    from jinja2 import Template

    chunks: list[str] = []
    source = [
        "{% extends base %}{% block postamble %}<style>{{ css }}</style>{% endblock %}",
        "{% block contents %}<main>",
    ]
    index = 0
    for text, chart in parts:
        chunks.append(text)
        source.append(f"{{{{ chunks[{len(chunks) - 1}] }}}}")
        if chart is not None:
            source.append(f"<div class='chart'>{{{{ embed(roots[{index}]) }}}}</div>")
            index += 1
    source.append("</main>{% endblock %}")
    template = Template("".join(source))
    page: str = file_html(
        charts,
        resources=INLINE,
        title=title,
        template=template,
        template_variables={"chunks": chunks, "css": _CSS},
    )
    return page


def _folded_table(lines: list[Line]) -> str:
    totals: dict[tuple[str, str, str, str | None], list[int]] = defaultdict(lambda: [0, 0])
    for line in lines:
        slot = totals[line.experiment, line.variation, line.event, line.currency]
        slot[0] += line.events
        slot[1] += line.value
    rows = [
        (*key, n, value)
        for key, (n, value) in sorted(totals.items(), key=lambda i: (*i[0][:3], i[0][3] or ""))
    ]
    head = ["experiment", "variation", "event", "currency", "events", "v"]
    return "<h3>All days</h3>" + _table(head, rows)


def _daily_table(lines: list[Line], receipt: Receipt | None) -> str:
    head = ["experiment", "variation", "day (UTC)", "event", "currency", "events", "v"]
    shown = lines[:MAX_DAY_LINES]
    rows = [(*line[:2], line.day.isoformat(), *line[3:]) for line in shown]
    more = ""
    if len(shown) < len(lines):
        run = f" --run {receipt.run}" if receipt is not None and receipt.run is not None else ""
        more = (
            f"<p>... {len(lines) - len(shown):,} more lines: "
            f"<code>event-backfill receipt{_e(run)}</code></p>"
        )
    return (
        f"<details><summary>Per UTC day ({len(lines):,} lines)</summary>"
        f"{_table(head, rows)}{more}</details>"
    )


def _table(head: list[str], rows: Sequence[tuple[Any, ...]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, int):
            return f"<td class='n'>{value:,}</td>"
        return f"<td>{_e('' if value is None else str(value))}</td>"

    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table class='data'><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _examples(examples: list[dict[str, Any]]) -> str:
    if not examples:
        return ""
    items = []
    for ex in examples:
        where = f"line {ex['line']}" if ex.get("line") is not None else f"row {ex.get('row')}"
        column = f", column {ex['column']}" if ex.get("column") else ""
        value = f": {ex['value']!r}" if ex.get("value") is not None else ""
        text = f"{ex.get('file')} {where}{column}{value}"
        items.append(f"<li>{_e(text)}</li>")
    return f"<ul class='examples'>{''.join(items)}</ul>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0;
  padding:1.5rem;height:auto}
main{max-width:1100px;margin:0 auto}
h1{font-size:1.4rem;margin:0 0 .5rem}h1 .source{font-family:monospace;font-weight:normal}
h2{font-size:1.15rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
h3{font-size:1rem}
table{border-collapse:collapse;font-size:.9rem}
table.facts th{text-align:left;font-weight:normal;color:#666;padding:.1rem 1rem .1rem 0}
table.data{margin:.5rem 0}
table.data th,table.data td{border-bottom:1px solid #eee;padding:.2rem .6rem;text-align:left;
  vertical-align:top}
table.data th{background:#f6f6f6}
table.data td.n{text-align:right;font-variant-numeric:tabular-nums}
.tiles{display:flex;flex-wrap:wrap;gap:.5rem}
.tile{border:1px solid #ddd;border-radius:6px;padding:.4rem .8rem;min-width:6rem}
.tile .n{font-size:1.3rem;font-variant-numeric:tabular-nums}.tile .k{color:#666}
.tile.rejected .n,.tile.failed .n{color:#c0392b}.tile.sent .n{color:#1e8449}
.accounting code{font-size:.95rem}.ok{color:#1e8449}.bad{color:#c0392b;font-weight:bold}
.chart{margin:.5rem 0 1rem}
ul.examples{margin:.2rem 0;padding-left:1.2rem;font-family:monospace;font-size:.8rem}
li.warning{color:#b9770e}
details summary{cursor:pointer;margin:.5rem 0}
"""
