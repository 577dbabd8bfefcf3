"""The notebook example, executed in a real Jupyter kernel; and Ctrl-C in a kernel."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient

from .helpers import SALES_SCHEMA, write_sales

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "backfill.ipynb"

# jupyter_client and ipykernel warn about their own configuration paths and platform dirs.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def text_of(cell: Any) -> str:
    """Everything a cell showed, as plain text."""
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
        elif output.get("output_type") == "error":
            parts.append("\n".join(output["traceback"]))
    return "".join(parts)


def tagged(notebook: Any, tag: str) -> Any:
    """The cell with this tag."""
    return next(c for c in notebook.cells if tag in c.get("metadata", {}).get("tags", []))


def test_backfill_notebook_runs_and_sends_nothing_twice() -> None:
    """check → fix → send → send again: every fixed row arrives once, the re-run sends none."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    check = tagged(notebook, "check")
    assert "rows read 240 = valid 232 + filtered 0 + rejected 8" in text_of(check)
    html = [o["data"]["text/html"] for o in check.outputs if "text/html" in o.get("data", {})]
    assert html and html[0].startswith("<table><caption>event-backfill check")
    assert "TqdmWarning" not in text_of(check)
    rejects = text_of(tagged(notebook, "rejects"))
    for rule in ("value-negative", "user-id-empty", "user-id-email"):
        assert rule in rejects
    assert "rows read 238 = valid 238 + filtered 0 + rejected 0" in text_of(
        tagged(notebook, "recheck")
    )
    assert (
        "rows read 238 = sent 238 + filtered 0 + rejected 0 + failed 0 + skipped 0 + pending 0"
        in text_of(tagged(notebook, "send"))
    )
    received = text_of(tagged(notebook, "received"))
    assert "received by the collector: 238" in received
    totals = received.split("sum of v received:")[1].split("| sum of v sent:")
    assert int(totals[0]) == int(totals[1])
    resend = text_of(tagged(notebook, "resend"))
    assert (
        "rows read 238 = sent 0 + filtered 0 + rejected 0 + failed 0 + skipped 238 + pending 0"
        in resend
    )
    assert "collector now: 238 requests, 0 duplicates" in resend
    assert "finished" in text_of(tagged(notebook, "status"))


def run_cell(
    client: Any, code: str, *, interrupt_after: float | None = None, kernel: Any = None
) -> str:
    """Execute code in a kernel, optionally interrupting it; return what it printed."""
    msg_id = client.execute(code)
    if interrupt_after is not None:
        time.sleep(interrupt_after)
        kernel.interrupt_kernel()
    output = []
    while True:
        message = client.get_iopub_msg(timeout=120)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            output.append(content["text"])
        elif kind == "error":
            output.append("\n".join(content["traceback"]))
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(output)


def test_ctrl_c_in_a_kernel_stops_gracefully_and_resumes(tmp_path: Path) -> None:
    """KeyboardInterrupt during send(): in-flight requests drain, the report says how to resume."""
    data = write_sales(tmp_path / "sales.csv", 0, 20_000)
    kernel, client = start_new_kernel(kernel_name="python3", cwd=str(ROOT))
    try:
        setup = (
            "import importer, json\n"
            "collector = importer.RunningCollector()\n"
            f"schema = {SALES_SCHEMA!r}\n"
            "args = dict(schema=schema, endpoint=collector.url, "
            f"ledger={str(tmp_path / 'l.sqlite')!r}, rate=2000, progress=False)\n"
        )
        assert "Error" not in run_cell(client, setup)
        stopped = run_cell(
            client,
            f"r = importer.send({str(data)!r}, **args)\nprint(r.render())",
            interrupt_after=3.0,
            kernel=kernel,
        )
        assert "KeyboardInterrupt" not in stopped
        assert "stopped on request with" in stopped
        assert "run the same command again to resume" in stopped
        finished = run_cell(
            client,
            f"r = importer.send({str(data)!r}, **args)\n"
            "print(r.accounting)\n"
            "q = collector.accepted_queries()\n"
            "print('received', len(q), 'distinct', len(set(q)))",
        )
        assert "pending 0" in finished
        assert "received 20000 distinct 20000" in finished
    finally:
        client.stop_channels()
        kernel.shutdown_kernel(now=True)
