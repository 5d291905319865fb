"""The worker's recommender: learns from each interaction, publishes fresh lists to Redis.

State and partitioning. Each worker owns a slice of the users (the interactions topic is
keyed by user_id), so per-user state — tastes, histories — lives with its partition.
Global state is handled explicitly:

* the **catalogue** is broadcast: every item event is appended to a Redis stream in the
  same atomic write that stores the item, and every worker follows that stream from its
  start, so each one knows every item whichever items partitions it owns;
* **trending** and **co-engagement** are learned by each worker from its own users: a
  sample of the whole population, which is what makes N workers scale; the scale-out
  test bounds the quality cost against one worker;
* the cold-start **popular** list is global, in one Redis sorted set (see
  ``streams/interactions.py``).

Per batch: every fresh event is scored test-then-train for the live quality figures,
learned, and counted into the user's profile counters; then each touched user's top-K
is recomputed once and written, with reasons, the model version and the time.
Lists are computed at the stream's event time, so a replay gives the lists a live
run gave.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

import orjson

from online_models.base import is_positive, signal_of
from online_models.evaluation import Score
from online_models.feed import learn_event
from online_models.hybrid import HybridRecommender
from online_models.popularity import Popularity
from schemas.events import EventDecodeError, validate_event
from schemas.keys import Keys
from schemas.settings import Settings
from schemas.topics import INTERACTIONS
from streams.coalesce import APPLY_SCRIPT, encode_commands
from streams.interactions import apply_user_event
from streams.pipeline import Effects, with_redis_retry

log = logging.getLogger(__name__)

CATALOGUE_POLL_S = 0.2
REFRESH_SLICE_S = 0.05  # longest the list refresh holds the agent's lock at a time
SOURCES_POLL_S = 5.0
DISPLAY_FIELDS = ("title", "url", "category", "source", "domain", "tags", "deadline")


def in_sample(event_id: str, share: float) -> bool:
    """A stable sample of events by id: the same events are scored on every replay.

    Scoring an event ranks the catalogue twice (Eddy and the baseline), which costs more
    than learning it; a sample of targets estimates HR and NDCG just as well.

    >>> sum(in_sample(f"e{i}", 0.25) for i in range(10_000))
    2467
    """
    return share >= 1.0 or zlib.crc32(event_id.encode()) % 10_000 < share * 10_000


class RecommenderService:
    """One worker's recommender, its catalogue copy and its live quality counters."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model = HybridRecommender()
        self.baseline = Popularity()
        self.display: dict[str, dict[str, Any]] = {}
        self.scores = {"eddy": Score(), "popularity": Score()}
        self.ctr: dict[int, list[int]] = {}  # position -> [impressions, clicks]
        self.clock = 0.0  # latest event time seen
        self.touched: set[str] = set()
        self.catalogue_id = "0-0"
        self.member = f"{socket.gethostname()}:{os.getpid()}"
        self.active: OrderedDict[str, None] = OrderedDict()  # recently active users, newest last
        self.new_items = False
        self.refresh_queue: deque[str] = deque()  # users whose lists await a refresh
        # Held by the agent while it handles a batch and by the refresh while it writes, so
        # a refresh can never write back the list of a user a batch has just deleted.
        self.lock = asyncio.Lock()

    # --- catalogue ----------------------------------------------------------------------

    def learn_catalogue_entry(self, raw: bytes) -> None:
        try:
            event = validate_event(orjson.loads(raw))
        except (orjson.JSONDecodeError, EventDecodeError) as exc:  # written by Eddy: should not happen
            log.error("unreadable catalogue entry skipped: %s", exc)
            return
        learn_event(self.model, event)
        learn_event(self.baseline, event)
        self.new_items = True
        if event.retracted:
            self.display.pop(event.item_id, None)
        else:
            doc = event.model_dump(mode="json", exclude_none=True)
            self.display[event.item_id] = {f: doc[f] for f in DISPLAY_FIELDS if f in doc}

    async def catch_up(self, redis: Any, keys: Keys) -> int:
        """Learn everything the catalogue stream gained since last time; returns entries read.

        Called before every batch of interactions (so items stored before the batch are
        known to it) and by a polling task (so new items reach lists between batches).
        Callers hold :attr:`lock`, so the position in the stream only moves forward.
        """
        total = 0
        while True:
            reply = await redis.xread({keys.catalogue: self.catalogue_id}, count=5000)
            n = 0
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    self.learn_catalogue_entry(fields[b"item"])
                    self.catalogue_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    n += 1
            total += n
            if n < 5000:
                return total

    # --- learning -----------------------------------------------------------------------

    def effect(self, effects: Effects, event: Any, keys: Keys) -> None:
        """Per fresh event: counters, live test-then-train scoring, learning."""
        apply_user_event(effects, event, keys)
        self.clock = max(self.clock, event.ts or 0.0)
        if event.type == "user_deleted":
            self.model.forget_user(event.user_id)
            self.touched.discard(event.user_id)
            self.active.pop(event.user_id, None)
            return
        if event.type == "interaction":
            self._profile_counters(effects, event, keys)
            self._score_live(event)
        learn_event(self.model, event)
        learn_event(self.baseline, event)
        self.touched.add(event.user_id)
        self.active[event.user_id] = None
        self.active.move_to_end(event.user_id)
        if len(self.active) > self.settings.refresh_active_users:
            self.active.popitem(last=False)

    def _score_live(self, event: Any) -> None:
        if event.rec_id is not None and event.position is not None:
            cell = self.ctr.setdefault(event.position, [0, 0])
            if event.action == "impression":
                cell[0] += 1
            elif event.action == "click":
                cell[1] += 1
        if not is_positive(event.action, event.value):
            return
        if not in_sample(event.event_id, self.settings.live_eval_share):
            return
        consumed = self.model.consumed_by(event.user_id)
        if event.item_id in consumed:
            return
        now = event.ts or self.clock
        for name, model in (("eddy", self.model), ("popularity", self.baseline)):
            ranked = [s.item_id for s in model.rank(event.user_id, 10, now, exclude=consumed)]
            self.scores[name].add(ranked, event.item_id)

    def _profile_counters(self, effects: Effects, event: Any, keys: Keys) -> None:
        item = self.display.get(event.item_id)
        signal = signal_of(event.action, event.value)
        if item is None or event.action == "impression":
            return
        key = keys.user_counts(event.user_id)
        facets = [f"cat:{item['category']}"] if item.get("category") else []
        facets += [f"tag:{t}" for t in item.get("tags", [])]
        if item.get("source") or item.get("domain"):
            facets.append(f"src:{item.get('source') or item.get('domain')}")
        for facet in facets:
            effects.hincrby(key, f"n:{facet}", 1)
            if signal > 0:
                effects.hincrby(key, f"pos:{facet}", 1)
            if event.action == "rate":
                effects.hincrbyfloat(key, f"rsum:{facet}", float(event.value))
                effects.hincrby(key, f"rn:{facet}", 1)
        if event.action == "rate":
            effects.hincrbyfloat(key, "rating_sum", float(event.value))
            effects.hincrby(key, "rating_n", 1)

    # --- publishing ---------------------------------------------------------------------

    def recommendations(self, user_id: str) -> dict[str, Any]:
        """The document served for a user: top-K with scores, reasons and item fields."""
        # Stored in plain rank order; the API applies filters and the diversity guard at
        # the length it serves.
        chosen = self.model.rank(user_id, self.settings.recs_k, self.clock, exclude=self.model.consumed_by(user_id))
        return {
            "user_id": user_id,
            "items": [
                {"item_id": s.item_id, "score": s.score, "reason": s.reason, "item": self.display.get(s.item_id, {})}
                for s in chosen
            ],
            "model": "hybrid",
            "model_version": self.model.version,
            "computed_at": time.time(),
            "event_time": self.clock,
        }

    def finish(self, effects: Effects, fresh: Sequence[Any], keys: Keys) -> None:
        """After a batch: one fresh list per touched user, and the live quality figures."""
        for user_id in self.touched:
            effects.set(keys.recs(user_id), orjson.dumps(self.recommendations(user_id)))
        self.touched.clear()
        effects.hset(keys.models, f"recs:{self.member}", orjson.dumps(self.quality()))

    def refresh_commands(self, keys: Keys, budget_s: float = REFRESH_SLICE_S) -> list[tuple[Any, ...]]:
        """When the catalogue changed, fresh lists for the recently active users (newest
        first), so a new item reaches the users it suits before anyone clicks it.

        Returns one slice of at most ``budget_s`` of ranking: the caller holds the lock the
        agent needs, so thousands of users are refreshed a slice at a time, between batches,
        instead of stalling every interaction behind them.
        """
        if self.new_items:
            self.new_items = False
            self.refresh_queue = deque(reversed(self.active))  # a newer change restarts the round
        out = []
        deadline = time.perf_counter() + budget_s
        while self.refresh_queue and time.perf_counter() < deadline:
            user_id = self.refresh_queue.popleft()
            if user_id in self.active:  # not deleted meanwhile
                out.append(("SET", keys.recs(user_id), orjson.dumps(self.recommendations(user_id))))
        return out

    def quality(self) -> dict[str, Any]:
        """Mergeable counters: the API sums them over workers."""
        return {
            "model": "hybrid",
            "model_version": self.model.version,
            "k": 10,
            "scores": {
                name: {"targets": s.targets, "hits": s.hits, "ndcg_sum": s.ndcg_sum}
                for name, s in self.scores.items()
            },
            "ctr_by_position": {str(p): {"impressions": i, "clicks": c} for p, (i, c) in sorted(self.ctr.items())},
            "users": self.model.n_users,
            "items": len(self.display),
            "updated_at": time.time(),
        }


def register(ctx) -> None:  # noqa: ANN001 - streams.app.WorkerContext (import cycle)
    service = RecommenderService(ctx.settings)
    async def catch_up() -> None:
        await with_redis_retry("catalogue", lambda: service.catch_up(ctx.redis, ctx.keys))

    ctx.consume(
        INTERACTIONS, service.effect, name="learn_from_interactions", finish=service.finish, before=catch_up,
        lock=service.lock,
    )

    @ctx.app.task
    async def follow_catalogue() -> None:
        while True:
            async with service.lock:
                await catch_up()
            await asyncio.sleep(CATALOGUE_POLL_S)

    @ctx.app.timer(interval=SOURCES_POLL_S)
    async def follow_source_reliability() -> None:
        # Written by the scraping agents (streams/scraping.py): items of sources whose
        # scrapers fail or return odd shapes are ranked lower.
        raw = await with_redis_retry("sources", lambda: ctx.redis.hgetall(ctx.keys.sources))
        weights = {k.decode(): float(orjson.loads(v)["reliability"]) for k, v in raw.items()}
        async with service.lock:
            service.model.set_reliability(weights)

    @ctx.app.task
    async def refresh_lists() -> None:
        while True:
            async with service.lock:
                commands = service.refresh_commands(ctx.keys)
                for first in range(0, len(commands), 500):
                    payload = encode_commands(commands[first : first + 500])
                    await with_redis_retry("refresh", lambda p=payload: ctx.redis.eval(APPLY_SCRIPT, 0, p))
            # Between slices the agent takes the lock; a round done, wait for the next change.
            await asyncio.sleep(0.005 if service.refresh_queue else ctx.settings.refresh_interval_s)
