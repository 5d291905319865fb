"""The recommender's per-candidate arithmetic, compiled (Numba).

Ranking a user's pool of ~1,000 candidates took about forty NumPy calls, each a pass over
the pool: most of the time was the calls, not the arithmetic. :func:`featurise` does the
same arithmetic in one compiled pass over the candidates, in the order and with the
formulas of the NumPy version it replaced (the figures of ``eddy evaluate`` are unchanged).
Compiled once per machine and cached next to this file (``NUMBA_CACHE_DIR`` moves the cache
where the package directory is read-only).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

EMPTY = np.zeros(0)


@njit(cache=True, nogil=True)
def featurise(
    keys: np.ndarray, rows: np.ndarray, count: np.ndarray, collab: np.ndarray, seq: np.ndarray,
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, taste: np.ndarray, declared: np.ndarray,
    born: np.ndarray, trends: np.ndarray, now: float, fresh_half_life_s: float,
    scale: np.ndarray, out: np.ndarray, item_new: np.ndarray,
) -> None:
    """Fill ``out`` (len(keys) x 16 features, in ``hybrid.FEATURES`` order) and ``item_new``.

    ``trends`` holds the candidates' log1p trend counts (NumPy's vectorised logarithm beats a
    compiled loop's). ``collab``, ``seq``, ``taste`` and ``declared`` are empty when the user
    has none.
    ``scale`` holds (collab, seq, pop, *trends) maxima: NaN in its first cell means "take
    them from these candidates, and write them there"."""
    m = len(keys)
    width = trends.shape[1]
    fresh_col = 6 + 1 + width
    has_collab, has_seq = len(collab) > 0, len(seq) > 0
    has_taste, has_declared = len(taste) > 0, len(declared) > 0
    for j in range(m):
        k, r = keys[j], rows[j]
        c = count[k]
        norm = 1.0 / math.sqrt(max(c, 1.0))
        out[j, 0] = collab[k] * norm if has_collab else 0.0
        out[j, 1] = seq[k] * norm if has_seq else 0.0
        content = 0.0
        if has_taste:
            for e in range(indptr[r], indptr[r + 1]):
                content += data[e] * taste[indices[e]]
        dec = 0.0
        if has_declared:
            for e in range(indptr[r], indptr[r + 1]):
                dec += data[e] * declared[indices[e]]
        out[j, 4] = content
        out[j, 5] = dec
        out[j, 6] = math.log1p(c)  # pop, scaled below
        for t in range(width):
            out[j, 7 + t] = trends[j, t]
        out[j, fresh_col] = np.exp2(-max(0.0, now - born[r]) / fresh_half_life_s)
        out[j, fresh_col + 1] = 1.0
        item_new[j] = c == 0
    if math.isnan(scale[0]):
        for i in range(3 + width):
            scale[i] = 0.0
        for j in range(m):
            scale[0] = max(scale[0], out[j, 0])
            scale[1] = max(scale[1], out[j, 1])
            scale[2] = max(scale[2], out[j, 6])
            for t in range(width):
                scale[3 + t] = max(scale[3 + t], out[j, 7 + t])
    for j in range(m):
        out[j, 0] = out[j, 0] / scale[0] if scale[0] > 0 else 0.0
        out[j, 1] = out[j, 1] / scale[1] if scale[1] > 0 else 0.0
        out[j, 6] = out[j, 6] / scale[2] if scale[2] > 0 else 0.0
        liked = max(out[j, 4], 0.0)
        for t in range(width):
            top = scale[3 + t]
            trend = out[j, 7 + t] / (top if top > 0 else 1.0)
            if t == 1:  # match: content x the one-day trend
                out[j, 2] = liked * trend
            out[j, 7 + t] = trend / width
        out[j, 3] = liked * out[j, fresh_col]


def warm_up() -> None:
    """Compile (or load from the cache) now, so that a worker's first ranking after it
    starts does not wait for it, and its memory is taken at start rather than mid-stream."""
    one = np.zeros(1, dtype=np.int64)  # the argument types of hybrid.py's call; any sizes do
    featurise(one, one, np.zeros(1), EMPTY, EMPTY, np.array([0, 1], dtype=np.int64), one, np.zeros(1), np.zeros(1),
              EMPTY, np.zeros(1), np.zeros((1, 7)), 0.0, 1.0, np.full(10, np.nan), np.empty((1, 16)),
              np.empty(1, dtype=bool))
