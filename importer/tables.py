"""The two tables mapping produces: events (one row per valid input row, with its request
URL) and rejects (one row per rule a row breaks). The report, the --rejects file and the
sender read them; an empty one has the same columns and types."""

from __future__ import annotations

import pyarrow as pa

from importer.encode import PARAM_ORDER

# The parameters kept as integers in the events table; the others are text.
_INTEGER_PARAMS = ("v", "time")

EVENTS_SCHEMA = pa.schema(
    [
        ("position", pa.int64()),
        ("file", pa.string()),
        ("row", pa.int64()),
        ("line", pa.int64()),
        *((name, pa.int64() if name in _INTEGER_PARAMS else pa.string()) for name in PARAM_ORDER),
        ("currency", pa.string()),
        ("url", pa.string()),
    ]
)

REJECTS_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("row", pa.int64()),
        ("line", pa.int64()),
        ("column", pa.string()),
        ("rule", pa.string()),
        ("message", pa.string()),
        ("value", pa.string()),
        ("position", pa.int64()),
    ]
)


def empty_events() -> pa.Table:
    """An events table with no rows."""
    return EVENTS_SCHEMA.empty_table()


def empty_rejects() -> pa.Table:
    """A rejects table with no rows."""
    return REJECTS_SCHEMA.empty_table()
