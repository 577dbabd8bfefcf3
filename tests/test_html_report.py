"""The HTML run report: its sections, the receipt in any form, the missing extra, and the page
as a real browser shows it (headless Chromium, installed from apt when missing)."""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd
import pytest
from typer.testing import CliRunner

from importer import api, html_report
from importer.cli import app
from importer.errors import UsageError
from importer.ledger.receipt import Receipt
from importer.report import Report

from .helpers import cli

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "offline_sales.toml"
SALES = ROOT / "sample_data" / "offline_sales.csv"
DAY = 20_089  # 2025-01-01 as a day number
MISSING = (
    "--report needs the optional extra 'report' (Bokeh, which draws its charts): "
    "pip install 'event-backfill[report]'; nothing was sent"
)
runner = CliRunner()


def receipt_records() -> list[dict[str, Any]]:
    """A small receipt: two experiments, two currencies, two days."""
    return [
        dict(experiment="111", variation="1", day="2025-01-01", event="buy", currency="USD",
             events=3, value=3000),
        dict(experiment="111", variation="2", day="2025-01-02", event="buy", currency="EUR",
             events=1, value=999),
        dict(experiment="222", variation="7", day="2025-01-02", event="refund", currency=None,
             events=2, value=0),
    ]  # fmt: skip


def a_receipt() -> Receipt:
    """receipt_records() as the ledger's Receipt."""
    lines = [
        ("111", "1", DAY, "buy", "USD", 3, 3000),
        ("111", "2", DAY + 1, "buy", "EUR", 1, 999),
        ("222", "7", DAY + 1, "refund", None, 2, 0),
    ]
    return Receipt(7, tuple(lines), sent=6)


def a_report(**fields: Any) -> Report:
    """A send report as a run leaves it: rejects, filters, totals and a receipt."""
    report = Report("send", source="sales.csv", schema="offline_sales.toml", rows_read=10)
    report.sent, report.filtered, report.rejected = 6, 2, 2
    report.rule_counts = Counter({"experiment-id-digits": 2})
    report.filter_counts = Counter({"--since/--until": 2})
    report.examples = {
        "experiment-id-digits": [
            {"file": "sales.csv", "row": 3, "line": 4, "column": "experiment_id", "value": "abc"}
        ]
    }
    t0 = DAY * 86_400
    report.stats.add_many(
        ["buy", "buy", "refund"], [3000, 999, None], [t0, t0 + 86_400, t0 + 90_000],
        ["USD", "EUR", None],
    )  # fmt: skip
    report.receipt = a_receipt()
    for name, value in fields.items():
        setattr(report, name, value)
    return report


@pytest.mark.parametrize(
    "given",
    [
        pytest.param(a_receipt(), id="Receipt"),
        pytest.param(receipt_records(), id="records"),
        pytest.param(pd.DataFrame(receipt_records()), id="DataFrame"),
    ],
)
def test_a_receipt_is_read_in_any_form(given: Any) -> None:
    """A Receipt, a list of dicts and a DataFrame (NaN currency) give the same lines."""
    lines = html_report.receipt_lines(given)
    assert [tuple(line) for line in lines] == [
        ("111", "1", pd.Timestamp("2025-01-01").date(), "buy", "USD", 3, 3000),
        ("111", "2", pd.Timestamp("2025-01-02").date(), "buy", "EUR", 1, 999),
        ("222", "7", pd.Timestamp("2025-01-02").date(), "refund", None, 2, 0),
    ]


def test_the_page_has_every_section_and_needs_no_network() -> None:
    """Accounting, charts per experiment and per currency, rules, receipt; scripts inlined."""
    page = str(api.report_html(a_report()))
    for section in ("accounting", "daily", "value", "rules", "receipt"):
        assert f"<section id='{section}'>" in page
    assert (
        "rows read 10 = sent 6 + filtered 2 + rejected 2 + failed 0 + skipped 0 + pending 0" in page
    )
    assert "experiment-id-digits" in page and "experiment id must be digits" in page
    assert "sales.csv line 4, column experiment_id: &#x27;abc&#x27;" in page
    assert "Receipt of run 7" in page
    # Charts: one per experiment (111, 222), per currency (EUR, USD; the refunds without a
    # currency have no value: no chart), the rules.
    assert page.count("data-root-id=") == 5
    assert "experiment 111" in page and "value, EUR" in page and "value, USD" in page
    assert "value, no currency" not in page
    # Self-contained: Bokeh's JavaScript is in the page, nothing is fetched.
    assert "Bokeh" in page and len(page) > 500_000
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)


def test_text_is_escaped_and_never_a_template() -> None:
    """A source name with HTML and Jinja syntax is shown as text."""
    page = str(api.report_html(a_report(source="<b>{{ 7*7 }}</b>")))
    assert "&lt;b&gt;{{ 7*7 }}&lt;/b&gt;" in page
    assert "<b>{{" not in page


def test_a_report_without_receipt_charts_its_own_totals() -> None:
    """A check report: events per day and value per event name from its totals."""
    report = a_report(command="check", receipt=None, valid=6, sent=0)
    page = str(api.report_html(report))
    assert "All events of the report" in page
    assert "The report&#x27;s totals per event name" in page
    assert "<section id='receipt'>" not in page
    assert "rows read 10 = valid 6 + filtered 2 + rejected 2" in page


def test_an_explicit_receipt_replaces_the_reports() -> None:
    """``receipt=`` (e.g. a DataFrame from api.receipt) is what the page charts and lists."""
    frame = pd.DataFrame(receipt_records()[:1])
    page = str(html_report.render(a_report(), receipt=frame))
    assert page.count("data-root-id=") == 3  # one experiment, one currency, the rules
    assert "Receipt</h2>" in page


def test_nothing_to_chart_is_a_page_without_scripts() -> None:
    """A report with no rows: the accounting line, no JavaScript."""
    page = str(api.report_html(Report("check", source="empty.csv")))
    assert "rows read 0 = valid 0 + filtered 0 + rejected 0" in page
    assert "<script" not in page


def test_a_notebook_shows_the_page_in_a_frame() -> None:
    """_repr_html_ is an iframe holding the escaped page; repr is short."""
    page = api.report_html(a_report())
    frame = page._repr_html_()
    assert frame.startswith('<iframe srcdoc="&lt;!DOCTYPE html&gt;')
    assert 'sandbox="allow-scripts allow-downloads"' in frame
    assert re.fullmatch(r"<HtmlReport \d+\.\d MB>", repr(page))


def test_report_html_with_a_path_writes_the_page(tmp_path: Path) -> None:
    """report_html(report, path) writes the page as UTF-8, the same page it returns."""
    page = api.report_html(a_report(), tmp_path / "run.html")
    written = (tmp_path / "run.html").read_text(encoding="utf-8")
    assert written.startswith("<!DOCTYPE html>") and written == str(page)


def test_a_page_that_cannot_be_written_is_a_warning(tmp_path: Path) -> None:
    """After a run, a failed write is a warning in the report, not an error."""
    report = a_report()
    html_report.write(report, tmp_path)  # a directory
    assert report.warnings == [
        f"--report {tmp_path}: the HTML report was not written (Is a directory)"
    ]
    html_report.write(report, tmp_path / "run.html")
    assert report.notes == [f"HTML report written to {tmp_path / 'run.html'}"]


def test_without_the_extra_the_message_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Bokeh: a UsageError naming the extra to install."""
    monkeypatch.setitem(sys.modules, "bokeh", None)
    assert not html_report.available()
    with pytest.raises(UsageError) as raised:
        api.report_html(a_report())
    assert str(raised.value) == MISSING.replace("--report", "the HTML report")


def test_send_report_without_the_extra_exits_2_before_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """send --report without Bokeh: exit 2, the message, no ledger opened, nothing sent."""
    monkeypatch.setitem(sys.modules, "bokeh", None)
    ledger = tmp_path / "ledger.sqlite"
    args = ["send", str(SALES), "-s", str(SCHEMA), "--endpoint", "https://example.invalid/e"]
    args += ["--ledger", str(ledger), "--report", str(tmp_path / "run.html"), "-q"]
    result = runner.invoke(app, args)
    assert (result.exit_code, result.stderr, result.stdout) == (2, f"error: {MISSING}\n", "")
    assert not ledger.exists() and not (tmp_path / "run.html").exists()


def test_api_send_checks_the_extra_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """api.send(report_html=...) refuses the same way, before reading the source."""
    monkeypatch.setitem(sys.modules, "bokeh", None)
    with pytest.raises(UsageError, match=re.escape(MISSING)):
        api.send("missing.csv", schema=SCHEMA, sandbox=True, report_html="run.html")


@pytest.mark.e2e  # a whole send through the sandbox collector
def test_api_send_writes_the_page(tmp_path: Path) -> None:
    """A sandbox send of the sample data writes the page; the report says where."""
    page = tmp_path / "run.html"
    report = api.send(SALES, schema=SCHEMA, sandbox=True, ledger=None, report_html=page)
    assert report.notes[-1] == f"HTML report written to {page}"
    text = page.read_text(encoding="utf-8")
    assert "rows read 600 = sent 600" in text and text.count("data-root-id=") == 4


# -- in a real browser ----------------------------------------------------------------------

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH = 1280
# What Bokeh drew: the chart roots with a canvas (inside Bokeh's shadow roots) not blank.
DRAWN = """(() => {
  const canvases = (node, out) => {
    if (node.shadowRoot) canvases(node.shadowRoot, out);
    for (const child of node.children || []) {
      if (child.tagName === 'CANVAS') out.push(child);
      canvases(child, out);
    }
    return out;
  };
  const painted = (c) => {
    if (!c.width || !c.height) return false;
    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) return true;
    return false;
  };
  const roots = [...document.querySelectorAll('[data-root-id]')];
  return JSON.stringify({
    roots: roots.length,
    drawn: roots.filter((root) => canvases(root, []).some(painted)).length,
    sections: [...document.querySelectorAll('section[id]')].map((s) => s.id),
    bokeh: typeof Bokeh === 'undefined' ? null : Bokeh.version,
  });
})()"""


@pytest.fixture(scope="module")
def chromium() -> str:
    """A Chromium binary; Debian's package is installed with apt-get when there is none."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip("no Chromium here, and no apt-get to install it (Debian's 'chromium')")
    if os.geteuid() != 0:
        pytest.skip("no Chromium here, and apt-get needs root to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    for step in (["update", "-qq"], ["install", "-y", "-qq", "chromium"]):
        done = subprocess.run(
            [apt, *lock, *step], capture_output=True, text=True, env=env, timeout=900
        )
        if done.returncode != 0:
            pytest.fail(f"apt-get {' '.join(step)} failed:\n{done.stderr[-2000:]}")
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium, yet it is not on PATH"
    return found


def messy_sales(path: Path) -> Path:
    """The sample sales with EUR and JPY rows, bad experiment ids and empty event names."""
    with SALES.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        if i % 7 == 3:
            row["currency"] = "EUR"
        if i % 11 == 5:
            row["currency"] = "JPY"
            row["amount"] = str(round(float(row["amount"].replace(",", "")) * 150))
        if i % 50 == 7:
            row["experiment_id"] = "abc"
        if i % 60 == 9:
            row["event"] = ""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


class Browser:
    """Headless Chromium driven over the DevTools protocol (aiohttp's websocket client)."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.log = profile.parent / "chromium.log"
        profile.mkdir()
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [
                    binary, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                    f"--user-data-dir={profile}", "--remote-debugging-port=0",
                    # Nothing on the network resolves: the page must not need it.
                    "--host-resolver-rules=MAP * ~NOTFOUND",
                    f"--window-size={WIDTH},900", "about:blank",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.port = self._port(profile / "DevToolsActivePort")
        self.events: list[dict[str, Any]] = []
        self._id = 0

    def _port(self, announced: Path) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"chromium exited: {self.log.read_text()[-2000:]}")
            if announced.exists() and announced.read_text().strip():
                return int(announced.read_text().split()[0])
            time.sleep(0.1)
        raise AssertionError(f"chromium did not start: {self.log.read_text()[-2000:]}")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    async def open(self, url: str, screenshot: Path) -> dict[str, Any]:
        """Load a page, wait until its charts are drawn, screenshot the whole of it; what
        DRAWN found."""
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{self.port}/json/list") as answer:
                targets = await answer.json()
            page = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                self.ws = ws
                for domain in ("Page", "Runtime", "Log", "Network"):
                    await self.call(f"{domain}.enable")
                await self.call("Page.navigate", url=url)
                await self.wait_for("Page.loadEventFired", 30)
                found = await self.drawn()
                await self.screenshot(screenshot)
                return found

    async def drawn(self) -> dict[str, Any]:
        """DRAWN, once every chart root has a drawn canvas (or after 20 s)."""
        deadline = time.monotonic() + 20
        while True:
            result = await self.call("Runtime.evaluate", expression=DRAWN, returnByValue=True)
            found: dict[str, Any] = json.loads(result["result"]["value"])
            if found["drawn"] >= found["roots"] > 0 or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.2)

    async def screenshot(self, path: Path) -> None:
        metrics = await self.call("Page.getLayoutMetrics")
        height = int(metrics["cssContentSize"]["height"]) + 1
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH, height=height, deviceScaleFactor=1, mobile=False,
        )  # fmt: skip
        await asyncio.sleep(0.5)  # let Bokeh redraw at the new size
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        mine = self._id
        await self.ws.send_json({"id": mine, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json()
            if message.get("id") == mine:
                assert "error" not in message, f"{method}: {message['error']}"
                result: dict[str, Any] = message["result"]
                return result
            self.events.append(message)

    async def wait_for(self, method: str, seconds: float) -> None:
        async with asyncio.timeout(seconds):
            while not any(e.get("method") == method for e in self.events):
                self.events.append(await self.ws.receive_json())

    def console_errors(self) -> list[str]:
        """Exceptions, console.error/assert calls and error log entries, as text."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a)) for a in params["args"])[:500])
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                out.append(f"{params['entry']['source']}: {params['entry']['text']}"[:500])
        return out

    def requests(self) -> list[str]:
        """Every URL the page asked for."""
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]


@pytest.mark.slow
def test_the_page_in_chromium(chromium: str, tmp_path: Path) -> None:
    """A real sandbox send (CLI) writes --report; Chromium draws every chart, logs no console
    error and fetches nothing but the file. The screenshot is left in tmp_path."""
    page = tmp_path / "run.html"
    sales = messy_sales(tmp_path / "sales.csv")
    args = ["send", str(sales), "-s", str(SCHEMA), "--sandbox", "--since", "2025-02-01", "-q"]
    done = cli(*args, "--ledger", str(tmp_path / "ledger.sqlite"), "--report", str(page))
    assert done.returncode == 3, done.stderr  # rows rejected: exit 3
    assert f"HTML report written to {page}" in done.stdout
    browser = Browser(chromium, tmp_path / "profile")
    try:
        found = asyncio.run(browser.open(page.as_uri(), tmp_path / "run.png"))
    finally:
        browser.close()
    # 3 experiments, 3 currencies (EUR, JPY, USD), the rules: 7 charts, each one drawn.
    assert found["bokeh"] and (found["roots"], found["drawn"]) == (7, 7), found
    assert found["sections"] == ["accounting", "daily", "value", "rules", "receipt", "notes"]
    assert browser.console_errors() == []
    assert [url for url in browser.requests() if not url.startswith(("file:", "data:"))] == []
    assert (tmp_path / "run.png").stat().st_size > 50_000
