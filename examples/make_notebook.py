"""Writes examples/backfill.ipynb (run it after editing the cells below).

The notebook is committed without outputs; ``tests/test_notebook.py`` executes it in a real
kernel and checks what it shows.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell(
        "# Backfilling offline sales from a notebook\n\n"
        "A data team's loop: build the rows in pandas, `check` them, fix what is rejected, "
        "`send` them (here into a local collector, so nothing leaves this machine), and re-run "
        "`send` safely: the ledger makes sure nothing is sent twice."
    ),
    new_code_cell(
        "import tempfile\n"
        "from pathlib import Path\n\n"
        "import numpy as np\n"
        "import pandas as pd\n\n"
        "import importer\n\n"
        "workdir = Path(tempfile.mkdtemp(prefix='backfill-'))"
    ),
    new_markdown_cell(
        "## 1. The rows, as a warehouse query would give them\n\n"
        "One row per in-store order: the customer, the amount in dollars, when it happened "
        "(local New York time), and the experiment variation the customer saw online."
    ),
    new_code_cell(
        "rng = np.random.default_rng(2025)\n"
        "n = 240\n"
        "sales = pd.DataFrame({\n"
        "    'order_id': [f'NB-{i:05d}' for i in range(n)],\n"
        "    'customer_id': pd.array([f'CUS-{c:04d}' for c in rng.integers(0, 90, n)], dtype='string'),\n"
        "    'amount': pd.array(rng.integers(199, 25_000, n) / 100, dtype='Float64'),\n"
        "    'ordered_at': pd.Timestamp('2025-03-01 09:00')\n"
        "        + pd.to_timedelta(rng.integers(0, 200 * 86_400, n), unit='s'),\n"
        "    'experiment_id': 987654321,\n"
        "    'variation_id': pd.Categorical(rng.choice(['1111111', '2222222_3333333'], n)),\n"
        "    'store': pd.Categorical(rng.choice(['downtown', 'airport', 'mall'], n)),\n"
        "})\n"
        "# What real extracts contain: a few refunds, lost customer ids, and emails as ids.\n"
        "sales.loc[[3, 50, 101], 'amount'] = [-12.5, -40.0, -7.25]\n"
        "sales.loc[[7, 77], 'customer_id'] = pd.NA\n"
        "sales.loc[[12, 120, 200], 'customer_id'] = ['ana@example.com', 'li@example.com', 'jo@example.com']\n"
        "sales.head()"
    ),
    new_markdown_cell(
        "## 2. The schema, as a dict (no TOML file needed)\n\n"
        "Each Event API parameter comes from a constant or a column."
    ),
    new_code_cell(
        "schema = {\n"
        "    'project_id': {'value': '1234567'},\n"
        "    'account_id': {'value': '8511325'},\n"
        "    'user_id': {'column': 'customer_id'},\n"
        "    'event_name': {'value': 'offline_purchase'},\n"
        "    'experiments': [{'experiment_column': 'experiment_id', 'variation_column': 'variation_id'}],\n"
        "    'value': {'column': 'amount', 'scale': 100},\n"
        "    'time': {'column': 'ordered_at', 'timezone': 'America/New_York'},\n"
        "    'segments': [{'id': '983745985', 'column': 'store'}],\n"
        "    'dedupe_key': ['order_id'],\n"
        "}"
    ),
    new_markdown_cell("## 3. Check: nothing is sent, every problem is named"),
    new_code_cell(
        "checked = importer.check(sales, schema=schema)\nchecked", metadata={"tags": ["check"]}
    ),
    new_code_cell("checked.rejects", metadata={"tags": ["rejects"]}),
    new_markdown_cell(
        "## 4. Fix them in pandas\n\n"
        "Refunds are real events here, so the schema allows negative values; rows without a "
        "customer cannot be attributed and are dropped; email ids are hashed (the spec advises "
        "against sending personal data)."
    ),
    new_code_cell(
        "fixed = sales.dropna(subset=['customer_id']).reset_index(drop=True)\n"
        "schema['value']['allow_negative'] = True\n"
        "schema['user_id']['hash'] = 'sha256'\n"
        "rechecked = importer.check(fixed, schema=schema)\n"
        "print(rechecked.accounting)",
        metadata={"tags": ["recheck"]},
    ),
    new_markdown_cell(
        "## 5. Send into a local collector\n\n"
        "The collector answers like the Event API and records what it receives. The ledger "
        "file makes the run resumable and remembers every order id it sent."
    ),
    new_code_cell(
        "collector = importer.RunningCollector()\n"
        "ledger = workdir / 'ledger.sqlite'\n"
        "first = importer.send(fixed, schema=schema, endpoint=collector.url, ledger=ledger, progress=False)\n"
        "first",
        metadata={"tags": ["send"]},
    ),
    new_code_cell(
        "print('received by the collector:', collector.stats.accepted)\n"
        "print('sum of v received:', collector.stats.value_total, '| sum of v sent:', sum(first.stats.value_per_event.values()))",
        metadata={"tags": ["received"]},
    ),
    new_markdown_cell("## 6. Run it again: nothing is sent twice"),
    new_code_cell(
        "again = importer.send(fixed, schema=schema, endpoint=collector.url, ledger=ledger, progress=False)\n"
        "print(again.accounting)\n"
        "print('collector now:', collector.stats.accepted, 'requests,', collector.stats.duplicates, 'duplicates')",
        metadata={"tags": ["resend"]},
    ),
    new_code_cell("importer.status(ledger=ledger)", metadata={"tags": ["status"]}),
    new_code_cell("collector.stop()"),
]


def main() -> None:
    notebook = new_notebook(
        cells=CELLS,
        metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
    )
    path = Path(__file__).with_name("backfill.ipynb")
    nbformat.write(notebook, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
