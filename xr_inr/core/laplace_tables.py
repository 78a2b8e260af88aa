"""The fixed probability tables of the grid method's entropy coder (part of the format).

A value is coded as an integer residual ``r`` (value minus a centre) under a
discretised Laplace picked by two integer indices:

* the scale index ``j`` in ``[SCALE_MIN, SCALE_MAX)``: scale ``2**((j + 0.5) / 8)``
  (1/8-octave steps, 2**-4 ... 2**13);
* the offset index ``a`` in ``[-4, 4]``: the Laplace's location sits at ``a / 8``
  relative to the centre (used only while the scale is under 8).

For scales of 8 and more, ``r`` is split as ``r = q * 2**k - 2**k // 2 + low``
with ``k = j // 8 - 2`` (so the scale is 4 to 8 times the bin ``2**k``): ``q`` is
coded with a table, the ``k`` low bits uniformly. Every table covers
``q`` in ``[-HALF_ALPHABET, HALF_ALPHABET]``; its two end symbols also stand for
every larger magnitude (an escape, see :mod:`xr_inr.core.entropy`).

The tables are integer frequencies summing to ``2**PRECISION`` (each >= 1),
computed once with float ``exp`` by :func:`generate` and shipped as
``laplace_tables.npz``; the decoder only reads them. Regenerate with
``python -m xr_inr.core.laplace_tables`` (the test suite checks that the
shipped file equals what :func:`generate` computes here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PRECISION = 24
"""Frequencies sum to 2**PRECISION (constriction's model precision)."""
HALF_ALPHABET = 64
SCALE_MIN, SCALE_MAX = -32, 104
"""Scale indices j (scale 2**((j + 0.5) / 8)) cover 2**-4 ... 2**13."""
SPLIT = 24
"""From this scale index on (scale >= 8), low bits are split off and the offset is ignored."""
OFFSETS = 9
"""Offset indices a = -4 ... 4 (location a / 8 from the centre)."""
FIRST_SPLIT_TABLE = (SPLIT - SCALE_MIN) * OFFSETS
"""Tables from this index on are those of the split scales (one per scale index)."""
TABLES = FIRST_SPLIT_TABLE + SCALE_MAX - SPLIT
PATH = Path(__file__).with_name("laplace_tables.npz")


def table_index(j: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Row of the table set for scale indices ``j`` (clipped) and offset indices ``a``."""
    j = np.minimum(np.maximum(j, SCALE_MIN), SCALE_MAX - 1)  # (np.clip is slower on small arrays)
    small = (j - SCALE_MIN) * OFFSETS + a + OFFSETS // 2
    return np.where(j < SPLIT, small, FIRST_SPLIT_TABLE + j - SPLIT).astype(np.intp)


def low_bits(j: np.ndarray) -> np.ndarray:
    """Bits ``k`` split off a residual coded at scale index ``j`` (0 under scale 8)."""
    return np.maximum(np.minimum(j, SCALE_MAX - 1) // 8 - 2, 0).astype(np.int64)


def table_offsets(table: np.ndarray) -> np.ndarray:
    """Offset index ``a`` (the location at ``a / 8`` from the centre) of each table index (0 for the
    split scales, whose tables ignore it)."""
    return np.where(table < FIRST_SPLIT_TABLE, table % OFFSETS - OFFSETS // 2, 0)


TABLE_LOW_BITS = np.concatenate([np.zeros(FIRST_SPLIT_TABLE, np.int64), low_bits(np.arange(SPLIT, SCALE_MAX))])
"""Bits ``k`` split off a residual coded with each table (indexed by :func:`table_index`)."""


def _laplace_table(scale: float, offset: float, k: int) -> np.ndarray:
    """Integer frequencies of q = floor((r + 2**k // 2) / 2**k), r ~ Laplace(offset, scale) on unit bins."""
    width = 2**k
    q = np.arange(-HALF_ALPHABET, HALF_ALPHABET + 1)
    upper = (q * width - width // 2 + width - 0.5 - offset) / scale  # upper edge of each q's bin
    cdf = np.where(upper < 0, 0.5 * np.exp(np.minimum(upper, 0)), 1 - 0.5 * np.exp(-np.maximum(upper, 0)))
    cdf[-1] = 1.0
    prob = np.diff(cdf, prepend=0.0)
    size = prob.size
    freq = 1 + np.floor(prob * (2**PRECISION - size)).astype(np.int64)
    freq[np.argmax(freq)] += 2**PRECISION - freq.sum()
    return freq


def generate() -> np.ndarray:
    """(tables, 2 * HALF_ALPHABET + 1) uint32 frequencies, rows in :func:`table_index` order."""
    rows = []
    for j in range(SCALE_MIN, SPLIT):
        rows += [_laplace_table(2 ** ((j + 0.5) / 8), a / 8, 0) for a in range(-(OFFSETS // 2), OFFSETS // 2 + 1)]
    for j in range(SPLIT, SCALE_MAX):
        rows.append(_laplace_table(2 ** ((j + 0.5) / 8), 0.0, j // 8 - 2))
    return np.array(rows, dtype=np.uint32)


def load() -> np.ndarray:
    """The shipped tables."""
    with np.load(PATH) as data:
        return data["frequencies"]


if __name__ == "__main__":
    np.savez_compressed(PATH, frequencies=generate())
    print(f"wrote {PATH}")
