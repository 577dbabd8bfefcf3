"""event-backfill: validate, map and deliver historical conversion data to the Event API.

Use from Python::

    import importer
    report = importer.check("sales.csv", schema="schemas/offline_sales.toml")
    report.rejects            # a DataFrame: file, row, line, column, rule, message, value
    importer.preview("sales.csv", schema="schemas/offline_sales.toml", n=5)
"""

from importer.api import check, iter_events, preview
from importer.errors import ImporterError
from importer.report import Report
from importer.schema import Schema, load_schema

__all__ = ["ImporterError", "Report", "Schema", "check", "iter_events", "load_schema", "preview"]
from importer._version import __version__
