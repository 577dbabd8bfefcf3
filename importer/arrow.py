"""Small Arrow helpers the mapping modules share."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def bools(array: pa.Array) -> np.ndarray:
    """A boolean Arrow array as a numpy one, null as False."""
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)
