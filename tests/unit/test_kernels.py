"""The compiled featurisation against the NumPy formulas it replaced, on random pools."""

from __future__ import annotations

import numpy as np
import pytest

from online_models.hybrid import FEATURES, TRENDS
from online_models.kernels import EMPTY, featurise


def numpy_featurise(keys, rows, count, collab, seq, indptr, indices, data, taste, declared, born, trends, now,
                    half_life, scale=None):  # noqa: ANN001, ANN201 - the reference, as hybrid.py had it
    def content(vec: np.ndarray) -> np.ndarray:
        starts, ends = indptr[rows], indptr[rows + 1]
        return np.array([np.add.reduce(data[s:e] * vec[indices[s:e]]) for s, e in zip(starts, ends)])

    m = len(keys)
    zeros = np.zeros(m)
    c = count[keys]
    norm = 1.0 / np.sqrt(np.maximum(c, 1.0))
    col = collab[keys] * norm if len(collab) else zeros
    sq = seq[keys] * norm if len(seq) else zeros
    cont = content(taste) if len(taste) else zeros
    dec = content(declared) if len(declared) else zeros
    liked = np.maximum(cont, 0.0)
    fresh = np.exp2(-np.maximum(0.0, now - born[rows]) / half_life)
    pop = np.log1p(c)
    if scale is None:
        scale = (col.max(), sq.max(), pop.max(), trends.max(axis=0))
    top_col, top_sq, top_pop, top_trend = scale
    trend = trends / np.where(top_trend > 0, top_trend, 1.0)
    X = np.empty((m, len(FEATURES)))
    X[:, 0] = col / top_col if top_col > 0 else 0.0
    X[:, 1] = sq / top_sq if top_sq > 0 else 0.0
    X[:, 2] = liked * trend[:, 1]
    X[:, 3] = liked * fresh
    X[:, 4] = cont
    X[:, 5] = dec
    X[:, 6] = pop / top_pop if top_pop > 0 else 0.0
    X[:, 7 : 7 + len(TRENDS)] = trend / len(TRENDS)
    X[:, 7 + len(TRENDS)] = fresh
    X[:, 8 + len(TRENDS)] = 1.0
    return X, c == 0, scale


@pytest.mark.parametrize("seed", range(6))
def test_compiled_features_equal_the_numpy_formulas(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_items, n_cols, m = 500, 80, 120
    lens = rng.integers(1, 12, n_items)
    indptr = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
    indices = rng.integers(0, n_cols, indptr[-1]).astype(np.int32)
    data = rng.random(indptr[-1])
    count = np.where(rng.random(n_items) < 0.3, 0.0, rng.integers(1, 50, n_items).astype(float))
    keys = rng.choice(n_items, m, replace=False).astype(np.int64)
    rows = rng.permutation(n_items)[:m].astype(np.int64)
    collab, seq = (rng.random(n_items) if seed % 2 else EMPTY), (rng.random(n_items) if seed % 3 else EMPTY)
    taste = rng.normal(size=n_cols) if seed != 4 else EMPTY
    declared = rng.random(n_cols) if seed % 2 == 0 else EMPTY
    born = rng.random(n_items) * 1e6
    trends = np.log1p(rng.random((m, len(TRENDS))) * np.where(rng.random((m, len(TRENDS))) < 0.2, 0.0, 30.0))
    now, half_life = 9e5, 86400.0

    expected, new, expected_scale = numpy_featurise(keys, rows, count, collab, seq, indptr, indices, data, taste,
                                                    declared, born, trends, now, half_life)
    X, item_new = np.empty((m, len(FEATURES))), np.empty(m, dtype=bool)
    scale = np.full(3 + len(TRENDS), np.nan)
    featurise(keys, rows, count, collab, seq, indptr, indices, data, taste, declared, born, trends, now, half_life,
              scale, X, item_new)
    np.testing.assert_allclose(X, expected, rtol=1e-13, atol=1e-15)
    assert (item_new == new).all()
    np.testing.assert_array_equal(scale, [*expected_scale[:3], *expected_scale[3]])

    # One more item featurised with the pool's scale, as a chosen item outside the pool is.
    one_x, one_new = np.empty((1, len(FEATURES))), np.empty(1, dtype=bool)
    featurise(keys[:1], rows[:1], count, collab, seq, indptr, indices, data, taste, declared, born, trends[:1], now,
              half_life, scale, one_x, one_new)
    np.testing.assert_allclose(one_x, expected[:1], rtol=1e-13, atol=1e-15)
