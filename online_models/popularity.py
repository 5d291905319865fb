"""Popularity baselines: global counts, and counts decayed by event time.

Both rank the items with the most positive interactions that are still servable (known,
not retracted, not past their deadline). They are the yardstick every other recommender
is measured against, and the cold-start fallback.

>>> from online_models.popularity import Popularity
>>> model = Popularity()
>>> for user, item in [("a", "x"), ("b", "x"), ("b", "y")]:
...     model.learn_interaction(user, item, 1.0, ts=0.0)
>>> [s.item_id for s in model.rank("c", k=2, now=1.0)]
['x', 'y']
>>> [s.item_id for s in model.rank("b", k=2, now=1.0, exclude={"x"})]
['y']
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from sortedcontainers import SortedList

from online_models.base import ItemInfo, Recommender, Scored


class Popularity(Recommender):
    """Ranks items by their number of positive interactions.

    Parameters
    ----------
    half_life_s
        When set, each interaction's weight halves every ``half_life_s`` seconds of event
        time (recency-decayed popularity, i.e. trending). ``None`` counts forever.
    """

    version = "1"

    def __init__(self, half_life_s: float | None = None) -> None:
        self.half_life_s = half_life_s
        # Scores are kept in units of "weight at time ref", so decay is one multiplication
        # at read time instead of touching every item at every event.
        self._scores: dict[str, float] = {}
        # The same scores in rank order, best first, as (-score, first seen, item): a top-k
        # read walks from the start instead of sorting every item on every read.
        self._order = SortedList()
        self._first: dict[str, int] = {}
        self._ref = 0.0
        self._deadlines: dict[str, float] = {}
        self._retracted: set[str] = set()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "_order" not in state:  # pickled before the rank order was kept: build it
            self._first = {item_id: n for n, item_id in enumerate(self._scores)}
            self._order = SortedList((-s, self._first[i], i) for i, s in self._scores.items())

    def _boost(self, ts: float) -> float:
        if self.half_life_s is None:
            return 1.0
        exponent = (ts - self._ref) / self.half_life_s
        if exponent > 500:  # rebase before the boost overflows a float
            factor = 2.0 ** (-exponent)
            self._scores = {i: s * factor for i, s in self._scores.items()}
            self._order = SortedList((-s, self._first[i], i) for i, s in self._scores.items())
            self._ref = ts
            exponent = 0.0
        return 2.0**exponent

    def learn_item(self, item: ItemInfo) -> None:
        if item.deadline is not None:
            self._deadlines[item.item_id] = item.deadline
        self._retracted.discard(item.item_id)

    def retract_item(self, item_id: str) -> None:
        self._retracted.add(item_id)
        old = self._scores.pop(item_id, None)
        if old is not None:
            self._order.remove((-old, self._first[item_id], item_id))

    def learn_interaction(self, user_id: str, item_id: str, signal: float, ts: float) -> None:
        if signal <= 0 or item_id in self._retracted:
            return
        boost = self._boost(ts)
        old = self._scores.get(item_id)
        first = self._first.setdefault(item_id, len(self._first))
        if old is None:
            old = 0.0
        else:
            self._order.remove((-old, first, item_id))
        self._scores[item_id] = new = old + boost
        self._order.add((-new, first, item_id))

    @property
    def ref(self) -> float:
        """The time raw scores are expressed at (moves only when they are rebased)."""
        return self._ref

    def raw(self, item_id: str) -> float:
        """An item's score in units of weight at :attr:`ref` (``score`` = raw × ``factor``)."""
        return self._scores.get(item_id, 0.0)

    def factor(self, now: float) -> float:
        """Decay from :attr:`ref` to ``now``: the same for every item."""
        if self.half_life_s is None:
            return 1.0
        return 2.0 ** ((self._ref - now) / self.half_life_s)

    def deadline(self, item_id: str) -> float | None:
        return self._deadlines.get(item_id)

    def score(self, item_id: str, now: float) -> float:
        """Decayed count at ``now`` (plain count without a half-life)."""
        return self._scores.get(item_id, 0.0) * self.factor(now)

    def servable(self, item_id: str, now: float) -> bool:
        deadline = self._deadlines.get(item_id)
        return item_id not in self._retracted and (deadline is None or deadline >= now)

    def top(self, n: int, now: float, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """The n best (item, score) pairs, servable and not excluded (ties: first counted first)."""
        excluded = exclude if isinstance(exclude, (set, frozenset, dict)) else set(exclude)
        factor = self.factor(now)
        out = []
        if n <= 0:
            return out
        for neg, _, item_id in self._order:
            if item_id in excluded or not self.servable(item_id, now):
                continue
            out.append((item_id, -neg * factor))
            if len(out) == n:
                break
        return out

    def rank(self, user_id: str, k: int, now: float, exclude: Iterable[str] = ()) -> list[Scored]:
        reason = "trending" if self.half_life_s else "popular"
        return [Scored(i, s, reason) for i, s in self.top(k, now, exclude)]

    def log_score(self, item_id: str, now: float) -> float:
        return math.log1p(self.score(item_id, now))
