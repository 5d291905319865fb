"""Item-kNN baseline: co-occurrence over each user's last 20 positives, popularity to fill.

Every positive pairs the item with the user's last ``history`` positives (weight 1 each
way). A user's candidates score the sum of their co-occurrence with the user's last
``history`` positives, divided by the square root of the candidate's own count so that
blockbusters do not win on size alone. Lists shorter than k are filled by popularity.
It is the simple collaborative yardstick of ``eddy evaluate``.

>>> model = ItemKNN()
>>> for user, item in [("a", "x"), ("a", "y"), ("b", "x"), ("b", "z"), ("c", "x")]:
...     model.learn_interaction(user, item, 1.0, ts=0.0)
>>> [s.item_id for s in model.rank("c", k=3, now=1.0, exclude={"x"})]
['y', 'z']
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np

from online_models.base import ItemInfo, Recommender, Scored
from online_models.item_state import SparseRows
from online_models.item_table import resized
from online_models.popularity import Popularity


class ItemKNN(Recommender):
    """Co-occurrence item-kNN over the last ``history`` positives of each user."""

    version = "1"

    def __init__(self, history: int = 20) -> None:
        self.history = history
        self._key: dict[str, int] = {}
        self._ids: list[str] = []
        self._count = np.zeros(1024)
        self._co = SparseRows()
        self._recent: dict[str, deque[int]] = {}
        self._seen: dict[str, set[int]] = {}
        self.popularity = Popularity()

    def _key_of(self, item_id: str) -> int:
        k = self._key.get(item_id)
        if k is None:
            k = self._key[item_id] = len(self._ids)
            self._ids.append(item_id)
            if k >= len(self._count):
                self._count = resized(self._count, 2 * len(self._count), 0.0)
        return k

    def learn_item(self, item: ItemInfo) -> None:
        self.popularity.learn_item(item)

    def retract_item(self, item_id: str) -> None:
        self.popularity.retract_item(item_id)

    def learn_interaction(self, user_id: str, item_id: str, signal: float, ts: float) -> None:
        if signal <= 0:
            return
        self.popularity.learn_interaction(user_id, item_id, signal, ts)
        k = self._key_of(item_id)
        seen = self._seen.setdefault(user_id, set())
        if k in seen:
            return
        seen.add(k)
        self._count[k] += 1.0
        recent = self._recent.setdefault(user_id, deque(maxlen=self.history))
        if recent:
            others = list(recent)
            for other in others:
                self._co.add(other, k, 1.0)
            self._co.add_many(k, others, [1.0] * len(others))
        recent.append(k)

    def forget_user(self, user_id: str) -> None:
        self._recent.pop(user_id, None)
        self._seen.pop(user_id, None)

    def rank(self, user_id: str, k: int, now: float, exclude: Iterable[str] = ()) -> list[Scored]:
        excluded = exclude if isinstance(exclude, (set, frozenset)) else set(exclude)
        out: list[Scored] = []
        recent = self._recent.get(user_id)
        if recent:
            n = len(self._ids)
            scores = self._co.gather(list(recent), [1.0] * len(recent), n) / np.sqrt(np.maximum(self._count[:n], 1.0))
            hits = np.flatnonzero(scores > 0)
            if len(hits) > 4 * k + len(excluded):
                hits = hits[np.argpartition(-scores[hits], 4 * k + len(excluded))[: 4 * k + len(excluded)]]
            ids = self._ids
            for key in sorted(hits.tolist(), key=lambda h: (-scores[h], ids[h])):
                item_id = ids[key]
                if item_id in excluded or not self.popularity.servable(item_id, now):
                    continue
                out.append(Scored(item_id, float(scores[key]), "co-engaged"))
                if len(out) == k:
                    return out
        if len(out) < k:
            taken = {s.item_id for s in out}
            fill = self.popularity.top(k - len(out), now, exclude=excluded | taken if taken else excluded)
            out.extend(Scored(i, 0.0, "popular") for i, _ in fill)
        return out
