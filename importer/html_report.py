"""The run report as one self-contained HTML page: the accounting line, charts, tables.

``send --report run.html`` writes it; in a notebook ``importer.report_html(report)`` shows
it (and ``importer.report_html(report, "run.html")`` writes it). The page needs no network
to open: Bokeh's JavaScript is inlined (``resources=INLINE``, ~1.4 MB a page), the tables
are plain HTML.

Charts: events per UTC day per variation (one chart per experiment, the variations stacked),
value per currency (one chart per currency: minor units of different currencies never share
an axis), rejected and filtered rows by rule. They come from the receipt when there is one
(``report.receipt``, or one passed in: a :class:`~importer.ledger.Receipt`, a DataFrame such
as :func:`importer.api.receipt` returns, or a list of dicts with its columns), else from the
report's own totals. Bokeh is the optional ``report`` extra (pyproject.toml says why Bokeh):
:func:`require` tells a user what to install, before anything is sent.

This module is the way in and needs no Bokeh; :mod:`importer.html_data` reads a receipt in
any form, :mod:`importer.html_page` lays the page out and :mod:`importer.html_charts` draws
the charts (both imported once Bokeh is known to be there).
"""

from __future__ import annotations

import html
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from importer.errors import UsageError
from importer.html_data import ReceiptLike, receipt_lines
from importer.ledger.receipt import Receipt

if TYPE_CHECKING:

    from importer.report import Report

EXTRA = "report"
INSTALL = f"pip install 'event-backfill[{EXTRA}]'"
NOTEBOOK_HEIGHT = 900  # pixels of the frame a notebook shows the page in


class HtmlReport:
    """The page: ``str()`` is the HTML document; a notebook shows it in a frame."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<HtmlReport {len(self.text.encode()) / 1e6:.1f} MB>"

    def _repr_html_(self) -> str:
        # A frame keeps the page's scripts and styles away from the notebook's.
        return (
            f'<iframe srcdoc="{html.escape(self.text, quote=True)}" '
            f'style="width:100%;height:{NOTEBOOK_HEIGHT}px;border:0" '
            'sandbox="allow-scripts allow-downloads"></iframe>'
        )

    def save(self, path: str | Path) -> Path:
        """Write the page (UTF-8) and return its path."""
        target = Path(path)
        target.write_text(self.text, encoding="utf-8")
        return target


def available() -> bool:
    """Whether the ``report`` extra (Bokeh) is installed."""
    return importlib.util.find_spec("bokeh") is not None


def require(what: str = "the HTML report") -> None:
    """Refuse, naming the extra to install, when Bokeh is missing (nothing was sent)."""
    if not available():
        raise UsageError(
            f"{what} needs the optional extra '{EXTRA}' (Bokeh, which draws its charts): "
            f"{INSTALL}; nothing was sent"
        )


def render(report: Report, *, receipt: ReceiptLike | None = None) -> HtmlReport:
    """The report as one self-contained page.

    Args:
        report: any report (``send``'s has a receipt; ``check``'s charts its valid events).
        receipt: the receipt to chart and list instead of ``report.receipt`` (e.g. the whole
            run's, ``importer.api.receipt(ledger=..., run=...)``).

    Raises:
        UsageError: Bokeh (the ``report`` extra) is not installed.
    """
    require()
    found = receipt if receipt is not None else getattr(report, "receipt", None)
    lines = receipt_lines(found)
    from importer.html_page import Page

    page = Page(report, lines, found if isinstance(found, Receipt) else None)
    return HtmlReport(page.document())


def save(report: Report, path: str | Path, *, receipt: ReceiptLike | None = None) -> Path:
    """Write :func:`render`'s page to ``path``."""
    return render(report, receipt=receipt).save(path)


def write(report: Report, path: str | Path) -> None:
    """Write the page at the end of a run (``send --report``): a note says where; a file
    that cannot be written is a warning, since the run is over and its report must show."""
    try:
        written = save(report, path)
    except OSError as exc:
        report.warnings.append(
            f"--report {path}: the HTML report was not written ({exc.strerror or exc})"
        )
    else:
        report.notes.append(f"HTML report written to {written}")
