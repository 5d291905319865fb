"""The catalogue as arrays, so that ranking scores thousands of candidates in one compiled
pass (online_models/kernels.py) instead of a Python loop per item.

One row per version of an item's features: an update that changes them appends a new row
and retires the old one, so rows stay append-only (the feature matrix is a growing CSR);
once retired rows are a quarter of the table, it is rewritten without them.
Beside the features, each row holds what decides whether and how the item may be served:
its event time (it exists from then on), its deadline, whether it is live (known and not
retracted) and its source's reliability weight. What users taught about the item (counts,
co-engagement) is kept by the recommender under the item's stable key, not by row.

>>> table = ItemTable()
>>> table.put("a", {"cat:x": 1.0}, born=0.0, deadline=None)
0
>>> table.put("a", {"cat:y": 1.0}, born=5.0, deadline=9.0)  # new features: a new row
1
>>> table.born[1], table.deadline[1], bool(table.live[0])
(np.float64(0.0), np.float64(9.0), False)
>>> table.content(np.array([1]), table.dense({"cat:y": 0.5})).tolist()
[0.5]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

_FIRST_ROWS = 1024
_ENTRIES_PER_ROW = 16


class ItemTable:
    """Append-only per-item arrays: CSR features plus serving state."""

    moves = 0  # (tables pickled before it was counted start from 0)

    def __init__(self) -> None:
        self.row: dict[str, int] = {}  # item -> its current row
        self.ids: list[str] = []  # row -> item
        self.feats: list[dict[str, float]] = []  # row -> its features (to spot unchanged updates)
        # Column 0 is a feature no taste holds: every row gets at least one entry, so that
        # per-row sums (``np.add.reduceat``) never meet an empty row.
        self.col: dict[str, int] = {"": 0}
        self.names: list[str] = [""]  # column -> feature
        self.n = 0
        self.nnz = 0
        self.retired = 0
        self.moves = 0  # how many times an existing item got another row (rows derived before are stale)
        self.born = np.zeros(_FIRST_ROWS)
        self.deadline = np.full(_FIRST_ROWS, np.inf)
        self.live = np.zeros(_FIRST_ROWS, dtype=bool)
        self.weight = np.ones(_FIRST_ROWS)
        self.indptr = np.zeros(_FIRST_ROWS + 1, dtype=np.int64)
        self.indices = np.zeros(_FIRST_ROWS * _ENTRIES_PER_ROW, dtype=np.int64)
        self.data = np.zeros(_FIRST_ROWS * _ENTRIES_PER_ROW)

    # --- writing ------------------------------------------------------------------------

    def put(self, item_id: str, feats: Mapping[str, float], *, born: float, deadline: float | None) -> int:
        """Adds or updates an item; returns its row. ``born`` is kept from the first version,
        a deadline only replaced by another one (as the trending model does)."""
        old = self.row.get(item_id)
        if old is not None and self.feats[old] == feats:
            self.live[old] = True
            if deadline is not None:
                self.deadline[old] = deadline
            return old
        r = self.n
        self._grow_rows(r + 1)
        entries = [(self._column(f), x) for f, x in feats.items()] or [(0, 0.0)]
        self._grow_entries(self.nnz + len(entries))
        for j, (c, x) in enumerate(entries, self.nnz):
            self.indices[j] = c
            self.data[j] = x
        self.nnz += len(entries)
        self.indptr[r + 1] = self.nnz
        self.n = r + 1
        self.ids.append(item_id)
        self.feats.append(feats)  # the caller's dict, never changed afterwards: not copied
        self.row[item_id] = r
        self.live[r] = True
        if old is None:
            self.born[r] = born
            self.deadline[r] = np.inf if deadline is None else deadline
        else:
            self.born[r] = self.born[old]
            self.deadline[r] = self.deadline[old] if deadline is None else deadline
            self.weight[r] = self.weight[old]
            self.live[old] = False
            self.retired += 1
            self.moves += 1
            if self.retired > max(_FIRST_ROWS, self.n // 4):
                self._compact()
                return self.row[item_id]
        return r

    def _compact(self) -> None:
        """Rewrite the table with only each item's current row (a re-scraped item whose text
        changes daily would otherwise add a row a day)."""
        keep = np.array(sorted(self.row.values()), dtype=np.int64)
        entries, _, lens = self._entries(keep)
        n, nnz = len(keep), len(entries)
        self.indices = resized(self.indices[entries], max(nnz, len(self.indices)), 0)
        self.data = resized(self.data[entries], max(nnz, len(self.data)), 0.0)
        self.indptr = resized(np.concatenate(([0], np.cumsum(lens))), len(self.indptr), 0)
        for name, fill in (("born", 0.0), ("deadline", np.inf), ("live", False), ("weight", 1.0)):
            array = getattr(self, name)
            setattr(self, name, resized(array[keep], len(array), fill))
        self.ids = [self.ids[r] for r in keep.tolist()]
        self.feats = [self.feats[r] for r in keep.tolist()]
        self.row = {item_id: r for r, item_id in enumerate(self.ids)}
        self.n, self.nnz, self.retired = n, nnz, 0
        self.moves += 1

    def _column(self, feature: str) -> int:
        c = self.col.get(feature)
        if c is None:
            c = self.col[feature] = len(self.names)
            self.names.append(feature)
        return c

    def retract(self, item_id: str) -> None:
        r = self.row.get(item_id)
        if r is not None:
            self.live[r] = False

    def _grow_rows(self, need: int) -> None:
        cap = len(self.born)
        if need <= cap:
            return
        new = max(need, 2 * cap)
        self.born = resized(self.born, new, 0.0)
        self.deadline = resized(self.deadline, new, np.inf)
        self.live = resized(self.live, new, False)
        self.weight = resized(self.weight, new, 1.0)
        self.indptr = resized(self.indptr, new + 1, 0)

    def _grow_entries(self, need: int) -> None:
        cap = len(self.data)
        if need > cap:
            new = max(need, 2 * cap)
            self.indices = resized(self.indices, new, 0)
            self.data = resized(self.data, new, 0.0)

    # --- reading ------------------------------------------------------------------------

    def rows_of(self, item_ids: object) -> list[int]:
        """Current rows of the given items, skipping those not in the catalogue."""
        get = self.row.get
        return [r for r in map(get, item_ids) if r is not None]

    def eligible(self, now: float) -> np.ndarray:
        """Rows that may be served at ``now``: live, born, not past their deadline."""
        n = self.n
        return self.live[:n] & (self.born[:n] <= now) & (self.deadline[:n] >= now)

    def dense(self, weights: Mapping[str, float]) -> np.ndarray:
        """A feature-weight mapping as a dense vector over the columns (unknown features,
        which no item holds, are dropped)."""
        vec = np.zeros(len(self.col))
        get = self.col.get
        cols = [get(f, 0) for f in weights]
        vec[cols] = list(weights.values())
        vec[0] = 0.0  # column 0 stands for "no feature" (an item without any) and weighs nothing
        return vec

    def _entries(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The CSR entries of ``rows``, row after row: (entries, each row's offset into
        them, each row's length)."""
        starts = self.indptr[rows]
        lens = self.indptr[rows + 1] - starts
        offsets = np.cumsum(lens) - lens
        return np.arange(int(lens.sum())) + np.repeat(starts - offsets, lens), offsets, lens

    def content(self, rows: np.ndarray, taste: np.ndarray) -> np.ndarray:
        """Dot product of each row's features with a dense taste vector (what
        online_models/kernels.py computes per candidate while ranking; here for one-off reads
        and as the reference the table is tested against)."""
        entries, offsets, _ = self._entries(rows)
        return np.add.reduceat(self.data[entries] * taste[self.indices[entries]], offsets)

    def best_features(self, rows: np.ndarray, taste: np.ndarray) -> list[str]:
        """Per row, the feature adding most to its dot product with ``taste`` (the first of
        the row's features on a tie).

        >>> table = ItemTable()
        >>> _ = table.put("a", {"cat:x": 0.8, "tag:y": 0.6}, born=0.0, deadline=None)
        >>> table.best_features(np.array([0]), table.dense({"cat:x": 0.1, "tag:y": 0.9}))
        ['tag:y']
        """
        entries, offsets, lens = self._entries(rows)
        products = self.data[entries] * taste[self.indices[entries]]
        top = np.maximum.reduceat(products, offsets)
        hits = np.flatnonzero(products == np.repeat(top, lens))
        row_of_hit = np.searchsorted(offsets, hits, side="right") - 1
        first = hits[np.unique(row_of_hit, return_index=True)[1]]
        names = self.names
        return [names[c] for c in self.indices[entries[first]].tolist()]


def resized(array: np.ndarray, size: int, fill: object) -> np.ndarray:
    """A copy of ``array`` cut or padded with ``fill`` to ``size`` (growing per-item arrays)."""
    out = np.full(size, fill, dtype=array.dtype)
    out[: len(array)] = array
    return out
