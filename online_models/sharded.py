"""N workers in one process: what a deployment of N recommender workers learns, replayed.

Live, the interactions topic is keyed by user, so each worker learns its own users. What
users teach about *items* (counts, trending, co-engagement) must still come from all of
them: each worker publishes the item facts of its users' events (``HybridRecommender.
shared``), and every other worker learns them (``learn_shared``) a little later
(streams/recommend.py). :class:`Sharded` replays that in-process, so that ``eddy evaluate
--workers N`` measures what N workers cost in quality: users are spread over the workers
by a hash of their id, items reach every worker, and the facts are exchanged when the
stream's event time has moved ``exchange_s`` on, or after ``exchange_every`` learning calls,
whichever comes first: the lag of a live worker, which learns the others' facts within a
second of wall-clock time (a batch and a poll of the stream), is a second of event time
when it keeps up with a live stream. ``exchange_every=0`` never exchanges them: every
worker learns from its own users only.

>>> from online_models.base import ItemInfo
>>> from online_models.hybrid import HybridRecommender
>>> def replay(exchange_every: int) -> list[str]:
...     model = Sharded(HybridRecommender, workers=2, exchange_every=exchange_every)
...     for n, item in enumerate(("a", "b", "c")):  # c is the newest
...         model.learn_item(ItemInfo(item, ts=n / 10))
...     for user in ("ann", "dee"):  # both on worker 1
...         model.learn_interaction(user, "a", 1.0, ts=1.0)
...         model.learn_interaction(user, "b", 1.0, ts=2.0)
...     model.learn_interaction("eve", "a", 1.0, ts=3.0)  # on worker 0
...     return [s.item_id for s in model.rank("eve", k=2, now=4.0, exclude={"a"})]
>>> replay(exchange_every=1), replay(exchange_every=0)  # b: co-engaged with a on worker 1
(['b', 'c'], ['c', 'b'])
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from online_models.base import ItemInfo, Recommender, Scored


def shard_of(user_id: str, workers: int) -> int:
    """The worker a user's events go to (stable across runs)."""
    return zlib.crc32(user_id.encode()) % workers


class Sharded(Recommender):
    """``workers`` copies of a sharing recommender, each learning its own users."""

    def __init__(self, factory: Callable[[], Any], workers: int, exchange_every: int = 500,
                 exchange_s: float = 1.0) -> None:
        self.shards = [factory() for _ in range(workers)]
        self.exchange_every = exchange_every
        self.exchange_s = exchange_s
        for shard in self.shards:
            shard.sharing = exchange_every > 0
        self._since = 0
        self._last_ts = float("-inf")
        self.version = self.shards[0].version

    def _exchange(self) -> None:
        facts = [shard.shared() for shard in self.shards]
        for i, shard in enumerate(self.shards):
            for j, theirs in enumerate(facts):
                if i != j and theirs:
                    shard.learn_shared(theirs)

    def _learned(self, ts: float) -> None:
        if not self.exchange_every:
            return
        self._since += 1
        if self._since >= self.exchange_every or ts - self._last_ts >= self.exchange_s:
            self._since, self._last_ts = 0, ts
            self._exchange()

    def _shard(self, user_id: str) -> Any:
        return self.shards[shard_of(user_id, len(self.shards))]

    def learn_item(self, item: ItemInfo) -> None:
        for shard in self.shards:
            shard.learn_item(item)

    def retract_item(self, item_id: str) -> None:
        for shard in self.shards:
            shard.retract_item(item_id)

    def learn_interaction(self, user_id: str, item_id: str, signal: float, ts: float) -> None:
        self._shard(user_id).learn_interaction(user_id, item_id, signal, ts)
        self._learned(ts)

    def learn_preference(self, user_id: str, interests: Mapping[str, float], ts: float) -> None:
        self._shard(user_id).learn_preference(user_id, interests, ts)

    def forget_user(self, user_id: str) -> None:
        self._shard(user_id).forget_user(user_id)

    def rank(self, user_id: str, k: int, now: float, exclude: Iterable[str] = ()) -> list[Scored]:
        return self._shard(user_id).rank(user_id, k, now, exclude)

    def ranked_ids(self, user_id: str, k: int, now: float, exclude: Iterable[str] = ()) -> list[str]:
        return self._shard(user_id).ranked_ids(user_id, k, now, exclude)
