"""Read → skip what the ledger settled → map, in order, with mapping spread over threads."""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import numpy as np
import pyarrow as pa

from importer.mapping import Mapped, Mapper
from importer.source import DEFAULT_BATCH_SIZE, Batch, Source

DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


class Settled(Protocol):
    """What the ledger knows before reading: which rows an earlier run settled."""

    def settled_range(self, start: int, stop: int) -> bool:
        """True when every row of [start, stop) is settled."""

    def settled_mask(self, positions: np.ndarray) -> np.ndarray:
        """True for each settled position."""


def unsettled(batches: Iterator[Batch], ledger: Settled | None) -> Iterator[Batch]:
    """Drop the rows an earlier run settled, before they are mapped; count them as skipped."""
    for batch in batches:
        if ledger is None or (batch.data is None and not batch.malformed):
            yield batch
            continue
        done = ledger.settled_mask(batch.positions)
        bad_done = ledger.settled_mask(
            np.array([m.position for m in batch.malformed], dtype=np.int64)
        )
        if not done.any() and not bad_done.any():
            yield batch
            continue
        keep = ~done
        yield dataclasses.replace(
            batch,
            data=batch.data.filter(pa.array(keep)) if batch.data is not None else None,
            positions=batch.positions[keep],
            rows=batch.rows[keep],
            lines=batch.lines[keep] if batch.lines is not None else None,
            malformed=tuple(m for m, d in zip(batch.malformed, bad_done, strict=True) if not d),
            skipped=batch.skipped + int(done.sum()) + int(bad_done.sum()),
        )


def mapped_batches(
    source: Source,
    mapper: Mapper,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    ledger: Settled | None = None,
    workers: int = DEFAULT_WORKERS,
    columns: list[str] | None = None,
) -> Generator[Mapped, None, None]:
    """Read and map batches in order, mapping up to ``workers`` batches at once.

    Arrow's kernels release the GIL, so mapping in threads uses every core while this
    thread reads ahead. At most ``workers + 1`` batches are held at a time. Rows the ledger
    has settled are skipped before mapping (whole Parquet row groups without decoding).
    ``columns``: what to read, when more than the schema's columns are needed.
    The warnings of each batch are counted in ``mapper.warned`` as it is handed out (not
    when mapped: a caller may stop early, and batches mapped ahead were never used).
    """
    settled = ledger.settled_range if ledger is not None else None
    wanted = columns if columns is not None else mapper.schema.columns()
    read = source.batches(wanted, batch_size=batch_size, settled=settled)
    batches = unsettled(read, ledger)
    if workers <= 1:
        for batch in batches:
            yield _counted(mapper, mapper.map(batch))
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="map") as pool:
        pending: deque[Future[Mapped]] = deque()
        try:
            for batch in batches:
                pending.append(pool.submit(mapper.map, batch))
                if len(pending) > workers:
                    yield _counted(mapper, pending.popleft().result())
            while pending:
                yield _counted(mapper, pending.popleft().result())
        finally:
            for future in pending:
                future.cancel()


def _counted(mapper: Mapper, mapped: Mapped) -> Mapped:
    mapper.warned.add(mapped.warnings)
    return mapped
