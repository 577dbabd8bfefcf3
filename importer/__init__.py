"""event-backfill: validate, map and deliver historical conversion data to the Event API.

Use from Python::

    import importer
    report = importer.check("sales.csv", schema="schemas/offline_sales.toml")
    report.rejects            # a DataFrame: file, row, line, column, rule, message, value
    importer.preview("sales.csv", schema="schemas/offline_sales.toml", n=5)
    importer.send(df, schema=schema, sandbox=True)

The names below load on first use, so ``import importer`` stays quick.
"""

from __future__ import annotations

import importlib
from typing import Any

from importer._version import __version__

_EXPORTS = {
    "check": "importer.api",
    "preview": "importer.api",
    "send": "importer.api",
    "send_async": "importer.api",
    "retry": "importer.api",
    "retry_async": "importer.api",
    "status": "importer.api",
    "failures": "importer.api",
    "receipt": "importer.api",
    "report_html": "importer.api",
    "iter_events": "importer.api",
    "guess_schema": "importer.api",
    "ImporterError": "importer.errors",
    "Report": "importer.report",
    "Schema": "importer.schema",
    "load_schema": "importer.schema",
    "SendOptions": "importer.options",
    "RunningCollector": "importer.collector",
    "Faults": "importer.collector",
    "Progress": "importer.progress",
    "NullProgress": "importer.progress",
    "TqdmProgress": "importer.progress",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'importer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
