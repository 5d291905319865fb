"""Per-item state learned from every user: co-engagement rows and decayed counts.

Items are numbered once, in the order they are first seen (a *key*), and never renumbered:
the catalogue table moves an item to another row when its features change, but what all
users taught about it stays under its key.

* :class:`SparseRows` holds, per key, the keys it co-occurs with and their weights. A row
  grows by appending; when its buffer is full, repeats are summed and the row is packed, so a
  write is a few array stores and a read is a slice (no dict per pair, 12 bytes an entry).
* :class:`DecayedCounts` holds each item's count at several half-lives at once, measured in
  seconds of event time and in events. Scores are kept at a reference point, so that decay is
  one multiplication at read time, the same for every item.

>>> rows = SparseRows()
>>> rows.add(0, 3, 1.0); rows.add(0, 3, 0.5); rows.add(0, 1, 2.0)
>>> rows.gather([0], [2.0], 4).tolist()
[0.0, 4.0, 0.0, 3.0]
>>> counts = DecayedCounts(time_half_lives=(10.0,), event_half_lives=(2.0,))
>>> counts.add(0, ts=0.0); counts.add(1, ts=10.0)
>>> counts.at([0, 1], now=10.0).round(3).tolist()
[[0.5, 0.707], [1.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_FIRST = 4


class SparseRows:
    """Append-only sparse rows of (key, weight), packed when full, read as arrays.

    Parameters
    ----------
    max_entries
        A row keeps at most this many distinct keys (the heaviest) when it is packed.
    """

    def __init__(self, max_entries: int = 5_000) -> None:
        self.max_entries = max_entries
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.size: list[int] = []

    def _ensure(self, r: int) -> None:
        while len(self.cols) <= r:
            self.cols.append(np.empty(_FIRST, dtype=np.int32))
            self.vals.append(np.empty(_FIRST))
            self.size.append(0)

    def _room(self, r: int, extra: int) -> None:
        """Makes room for ``extra`` more entries in row ``r``: pack, then grow if still full."""
        n, cap = self.size[r], len(self.cols[r])
        if n + extra <= cap:
            return
        if n:
            n = self._pack(r)
        if n + extra > cap // 2:  # packing freed too little: double
            new = max(2 * cap, n + extra)
            cols, vals = np.empty(new, dtype=np.int32), np.empty(new)
            cols[:n], vals[:n] = self.cols[r][:n], self.vals[r][:n]
            self.cols[r], self.vals[r] = cols, vals

    def _pack(self, r: int) -> int:
        n = self.size[r]
        cols, vals = self.cols[r][:n], self.vals[r][:n]
        order = np.argsort(cols, kind="stable")
        cols, vals = cols[order], vals[order]
        starts = np.flatnonzero(np.concatenate(([True], cols[1:] != cols[:-1])))
        cols, vals = cols[starts], np.add.reduceat(vals, starts)
        if len(cols) > self.max_entries:
            keep = np.sort(np.argpartition(-vals, self.max_entries)[: self.max_entries])
            cols, vals = cols[keep], vals[keep]
        n = len(cols)
        self.cols[r][:n], self.vals[r][:n] = cols, vals
        self.size[r] = n
        return n

    def add(self, r: int, c: int, w: float) -> None:
        self._ensure(r)
        self._room(r, 1)
        n = self.size[r]
        self.cols[r][n] = c
        self.vals[r][n] = w
        self.size[r] = n + 1

    def add_to_each(self, rows: Sequence[int], c: int, weights: Sequence[float]) -> None:
        """Adds (c, weight) to each of ``rows``: one call for a new item's pairs."""
        size, cols, vals = self.size, self.cols, self.vals
        for r, w in zip(rows, weights):
            if r >= len(size):
                self._ensure(r)
            n = size[r]
            if n == len(cols[r]):
                self._room(r, 1)
                n = size[r]
            cols[r][n] = c
            vals[r][n] = w
            size[r] = n + 1

    def add_many(self, r: int, cols: Sequence[int], weights: Sequence[float]) -> None:
        m = len(cols)
        if not m:
            return
        self._ensure(r)
        self._room(r, m)
        n = self.size[r]
        self.cols[r][n : n + m] = cols
        self.vals[r][n : n + m] = weights
        self.size[r] = n + m

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """The entries of row ``r`` (a key may repeat until the row is packed)."""
        if r >= len(self.size):
            return np.empty(0, dtype=np.int32), np.empty(0)
        n = self.size[r]
        return self.cols[r][:n], self.vals[r][:n]

    def gather(self, rows: Sequence[int], weights: Sequence[float], n: int) -> np.ndarray:
        """Dense vector of length ``n``: the rows summed, each times its weight."""
        cols, vals, lens, ws = [], [], [], []
        size = self.size
        for r, w in zip(rows, weights):
            m = size[r] if r < len(size) else 0
            if m:
                cols.append(self.cols[r][:m])
                vals.append(self.vals[r][:m])
                lens.append(m)
                ws.append(w)
        if not cols:
            return np.zeros(n)
        scaled = np.concatenate(vals) * np.repeat(ws, lens)  # each row times its weight, in one pass
        return np.bincount(np.concatenate(cols), weights=scaled, minlength=n)[:n]


class DecayedCounts:
    """Counts per key at several half-lives: in seconds of event time and in events.

    A count that halves every day of event time suits a stream of a few hundred events a
    day and not one of a few a day; one that halves every 10,000 events suits both. Both
    kinds are kept so that a learner can weigh them by what predicts on its own stream.
    """

    def __init__(self, time_half_lives: Sequence[float], event_half_lives: Sequence[float]) -> None:
        self.half_lives = np.array([*time_half_lives, *event_half_lives], dtype=float)
        self.is_time = np.array([True] * len(time_half_lives) + [False] * len(event_half_lives))
        self.raw = np.zeros((1024, len(self.half_lives)))
        self.ref = np.zeros(len(self.half_lives))
        self.events = 0
        self.last_ts = 0.0

    @property
    def width(self) -> int:
        return len(self.half_lives)

    def _clock(self, ts: float) -> np.ndarray:
        return np.where(self.is_time, ts, float(self.events))

    def add(self, key: int, ts: float, w: float = 1.0) -> None:
        if key >= len(self.raw):
            self._grow(key)
        self.events += 1
        self.last_ts = max(self.last_ts, ts)
        exponent = (self._clock(ts) - self.ref) / self.half_lives
        if exponent.max() > 500:  # rebase before the boost overflows a float
            self.raw *= np.exp2(-np.maximum(exponent, 0.0))
            self.ref = np.where(exponent > 0, self._clock(ts), self.ref)
            exponent = (self._clock(ts) - self.ref) / self.half_lives
        self.raw[key] += w * np.exp2(exponent)

    def _grow(self, key: int) -> None:
        grown = np.zeros((max(2 * len(self.raw), key + 1), self.width))
        grown[: len(self.raw)] = self.raw
        self.raw = grown

    def factor(self, now: float) -> np.ndarray:
        """Decay from the reference point to ``now``, per half-life."""
        return np.exp2((self.ref - self._clock(now)) / self.half_lives)

    def at(self, keys: Sequence[int] | np.ndarray, now: float) -> np.ndarray:
        """(len(keys), width) decayed counts at ``now`` (0 for keys never counted)."""
        keys = np.asarray(keys, dtype=np.int64)
        if len(keys) and keys.max() >= len(self.raw):
            self._grow(int(keys.max()))
        return self.raw[keys] * self.factor(now)

    def top(self, m: int, n: int, mask: np.ndarray | None = None) -> np.ndarray:
        """Keys among the first ``n`` in the top ``m`` of any half-life (and of none if all 0)."""
        if n > len(self.raw):
            self._grow(n - 1)
        raw = self.raw[:n]
        if mask is not None:
            raw = raw * mask[:n, None]
        if n <= m:
            return np.flatnonzero(raw.max(axis=1) > 0) if n else np.empty(0, dtype=np.int64)
        tops = np.argpartition(-raw, m, axis=0)[:m]
        keys = np.unique(tops)
        return keys[raw[keys].max(axis=1) > 0]
