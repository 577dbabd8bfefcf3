"""The charts of the HTML report, drawn with Bokeh (the optional ``report`` extra).

Only :mod:`importer.html_report` imports this module, and only once it has checked that
Bokeh is installed. Each function returns figures that module embeds into its page.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import cycle, islice
from typing import TYPE_CHECKING, Any, Literal

from bokeh.models import (
    BasicTicker,
    ColumnDataSource,
    DataRange1d,
    DatetimeTicker,
    DatetimeTickFormatter,
    DaysTicker,
    FactorRange,
    HoverTool,
    MonthsTicker,
    NumeralTickFormatter,
    YearsTicker,
)
from bokeh.models.annotations import Legend, LegendItem
from bokeh.palettes import Category10_10, Category20_20
from bokeh.plotting import figure

if TYPE_CHECKING:
    from importer.html_data import Line

_EPOCH = date(1970, 1, 1)
_DAY_MS = 86_400_000
_BAR_PX = 26  # height of a bar of a horizontal bar chart
_DAYS_TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save"


@dataclass
class Charts:
    """Figures for one section of the page, and what they show."""

    caption: str = ""
    figures: list[figure] = field(default_factory=list)


def colors(n: int) -> list[str]:
    """n distinct colours (they repeat past 20)."""
    palette = Category10_10 if n <= 10 else Category20_20
    return list(islice(cycle(palette), n))


# -- events per day -------------------------------------------------------------------------


def daily(lines: Sequence[Line], day_numbers: Mapping[int, int], most: int) -> Charts:
    """Events per UTC day: per experiment, the variations stacked (from the receipt); else
    the report's events per day in one chart."""
    if not lines:
        if not day_numbers:
            return Charts()
        series = {"all events": Counter(dict(day_numbers))}
        return Charts(
            "All events of the report (there is no receipt per experiment and variation).",
            [_stacked_days("events per UTC day", series)],
        )
    per: dict[str, dict[str, Counter[int]]] = defaultdict(lambda: defaultdict(Counter))
    totals: Counter[str] = Counter()
    for line in lines:
        per[line.experiment][line.variation][(line.day - _EPOCH).days] += line.events
        totals[line.experiment] += line.events
    shown = [experiment for experiment, _n in totals.most_common(most)]
    caption = (
        "From the receipt: one chart per experiment, its variations stacked (an event counts "
        "once in each experiment it is in). Drag to pan, scroll to zoom; the charts move "
        "together; click a variation in a legend to hide it."
    )
    if len(shown) < len(per):
        caption += f" The {most} experiments with most events of {len(per):,}; all are in the "
        caption += "receipt table."
    figures: list[figure] = []
    for experiment in sorted(shown):
        figures.append(
            _stacked_days(
                f"experiment {experiment}",
                per[experiment],
                share=figures[0] if figures else None,
            )
        )
    return Charts(caption, figures)


def _stacked_days(
    title: str, series: Mapping[str, Counter[int]], share: figure | None = None
) -> figure:
    """A bar per day, one stacked segment per series (variation)."""
    labels = sorted(series)
    days = sorted(set().union(*(set(counts) for counts in series.values())))
    keys = [f"s{i}" for i in range(len(labels))]
    data: dict[str, Any] = {"day": [d * _DAY_MS + _DAY_MS // 2 for d in days]}
    for key, label in zip(keys, labels, strict=True):
        data[key] = [series[label].get(d, 0) for d in days]
    extra: dict[str, Any] = {} if share is None else {"x_range": share.x_range}
    chart = figure(
        title=title,
        height=260,
        sizing_mode="stretch_width",
        x_axis_type="datetime",
        tools=_DAYS_TOOLS,
        active_scroll="xwheel_zoom",
        y_axis_label="events",
        y_range=DataRange1d(start=0),
        **extra,
    )
    bars = chart.vbar_stack(
        keys,
        x="day",
        width=0.85 * _DAY_MS,
        color=colors(len(keys)),
        name=labels,  # for the tooltip's $name: the label stays text, never a template
        source=ColumnDataSource(data),
    )
    for bar, key in zip(bars, keys, strict=True):
        chart.add_tools(
            HoverTool(
                renderers=[bar],
                tooltips=[("variation", "$name"), ("day", "@day{%F}"), ("events", f"@{key}")],
                formatters={"@day": "datetime"},
            )
        )
    # Above the plot: every chart of the page then has the same plot width, so the days of
    # the charts (which pan together) line up.
    _legend(chart, labels, bars, title="variation", where="above")
    chart.yaxis.formatter = NumeralTickFormatter(format="0,0")
    chart.yaxis.ticker = BasicTicker(min_interval=1)  # events are whole: no tick at 0.5
    chart.xaxis.ticker = _day_ticker()
    chart.xaxis.formatter = DatetimeTickFormatter(days="%b %d", months="%b %Y")
    chart.toolbar.logo = None
    return chart


def _day_ticker() -> DatetimeTicker:
    """Ticks on days, months or years, never between two days (a bar is a whole day)."""
    days = [DaysTicker(days=list(range(1, 32, step))) for step in (1, 2, 3, 7)] + [
        DaysTicker(days=[1, 15])
    ]
    months = [MonthsTicker(months=list(range(0, 12, step))) for step in (1, 2, 3, 6)]
    return DatetimeTicker(tickers=[*days, *months, YearsTicker()])


# -- value per currency ---------------------------------------------------------------------


def value(lines: Sequence[Line], totals: Mapping[tuple[str, str | None], list[int]]) -> Charts:
    """Value (sum of v) per currency: from the receipt per experiment and variation, the
    event names stacked; else the report's totals per event name. A currency whose values
    are all 0 (events without v) gets no chart."""
    per: dict[str | None, dict[tuple[str, ...], Counter[str]]] = defaultdict(
        lambda: defaultdict(Counter)
    )
    if lines:
        for line in lines:
            per[line.currency][line.experiment, line.variation][line.event] += line.value
        caption = (
            "From the receipt: one chart per currency (minor units never add up across "
            "currencies), a bar per experiment and variation, the event names stacked; v in "
            "minor units."
        )
    else:
        for (name, currency), (_n, total) in totals.items():
            per[currency][(name,)][name] += total
        caption = "The report's totals per event name: one chart per currency; v in minor units."
    figures = [
        _value_bars(currency, per[currency])
        for currency in sorted(per, key=_by_code)
        if any(any(events.values()) for events in per[currency].values())
    ]
    return Charts(caption, figures) if figures else Charts()


def _by_code(currency: str | None) -> str:
    return currency or ""


def _value_bars(currency: str | None, bars: Mapping[tuple[str, ...], Counter[str]]) -> figure:
    """A horizontal bar per group (experiment and variation, or event), events stacked."""
    groups = sorted(bars)
    names = sorted(set().union(*(set(parts) for parts in bars.values())))
    keys = [f"e{i}" for i in range(len(names))]
    factors: list[Any] = [group if len(group) > 1 else group[0] for group in groups]
    data: dict[str, Any] = {
        "group": factors,
        "label": [" / ".join(group) for group in groups],
    }
    for key, name in zip(keys, names, strict=True):
        data[key] = [bars[group].get(name, 0) for group in groups]
    unit = f"minor units of {currency}" if currency else "minor units (no currency column)"
    chart = figure(
        title=f"value, {currency or 'no currency'}",
        y_range=FactorRange(factors=factors[::-1]),  # the first group on top
        x_range=DataRange1d(start=0),
        height=90 + _BAR_PX * len(groups),
        sizing_mode="stretch_width",
        tools="save",
        x_axis_label=f"v, {unit}",
    )
    stacks = chart.hbar_stack(
        keys,
        y="group",
        height=0.7,
        color=colors(len(keys)),
        name=names,
        source=ColumnDataSource(data),
    )
    for stack, key in zip(stacks, keys, strict=True):
        chart.add_tools(
            HoverTool(
                renderers=[stack],
                tooltips=[("", "@label"), ("event", "$name"), ("v", f"@{key}{{0,0}}")],
            )
        )
    if len(names) > 1 or len(groups[0]) > 1:
        _legend(chart, names, stacks, title="event")
    chart.xaxis.formatter = NumeralTickFormatter(format="0,0")
    chart.ygrid.grid_line_color = None
    chart.toolbar.logo = None
    return chart


# -- rejected and filtered ------------------------------------------------------------------


def rules(
    rule_counts: Mapping[str, int], filter_counts: Mapping[str, int], rejected: str, filtered: str
) -> figure:
    """A bar per reject rule and per filter, rows on the x axis."""
    items = [("rejected", rule, n) for rule, n in sorted(rule_counts.items(), key=_most)]
    items += [("filtered", label, n) for label, n in sorted(filter_counts.items(), key=_most)]
    factors = [(kind, label) for kind, label, _n in items]
    source = ColumnDataSource(
        {
            "group": factors,
            "label": [label for _kind, label, _n in items],
            "rows": [n for _kind, _label, n in items],
            "color": [rejected if kind == "rejected" else filtered for kind, _l, _n in items],
        }
    )
    chart = figure(
        title="rows by rule",
        y_range=FactorRange(factors=factors[::-1]),
        x_range=DataRange1d(start=0),
        height=90 + _BAR_PX * len(items),
        sizing_mode="stretch_width",
        tools="save",
        x_axis_label="rows",
    )
    bars = chart.hbar(y="group", right="rows", height=0.7, color="color", source=source)
    chart.add_tools(HoverTool(renderers=[bars], tooltips=[("", "@label"), ("rows", "@rows{0,0}")]))
    chart.xaxis.formatter = NumeralTickFormatter(format="0,0")
    chart.ygrid.grid_line_color = None
    chart.toolbar.logo = None
    return chart


def _most(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])


def _legend(
    chart: figure,
    labels: Sequence[str],
    renderers: Sequence[Any],
    title: str,
    where: Literal["above", "right"] = "right",
) -> None:
    """A legend beside the plot (not over the bars); a click hides a series."""
    items = [
        LegendItem(label=label, renderers=[r]) for label, r in zip(labels, renderers, strict=True)
    ]
    if where == "above":  # one line (the chart's caption says what the items are)
        legend = Legend(
            items=items,
            click_policy="hide",
            orientation="horizontal",
            location="top_left",
            border_line_alpha=0,
            margin=0,
        )
    else:
        legend = Legend(items=items, click_policy="hide", title=title)
    chart.add_layout(legend, where)
