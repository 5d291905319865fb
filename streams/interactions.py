"""Interactions: what users do with items, their declared interests and 'forget me'.

Counts per user and per item by action, and global popularity of positively received
items. Popularity is global state shared by every worker: each worker adds to one Redis
sorted set with ZINCRBY, which is commutative, so N workers give the same ranking as one.
A timer turns the sorted set into the ready-to-serve popular list.
"""

from __future__ import annotations

import logging
import time

import orjson

from schemas.events import InteractionEvent, PreferenceEvent, UserDeletedEvent
from schemas.keys import Keys
from streams.pipeline import Effects, with_redis_retry

log = logging.getLogger(__name__)

POSITIVE = frozenset({"click", "view", "like", "save"})
NEGATIVE = frozenset({"dislike", "hide"})


def polarity(event: InteractionEvent) -> int:
    """+1 for a positive signal, -1 for a negative one, 0 for neutral (impressions, 3-star)."""
    if event.action == "rate":
        assert event.value is not None
        return 1 if event.value >= 4 else -1 if event.value <= 2 else 0
    return 1 if event.action in POSITIVE else -1 if event.action in NEGATIVE else 0


def apply_user_event(
    pipe: Effects, event: InteractionEvent | PreferenceEvent | UserDeletedEvent, keys: Keys
) -> None:
    """Queue the writes of one event of the interactions topic."""
    if event.type == "interaction":
        counts = keys.user_counts(event.user_id)
        pipe.hincrby(counts, event.action, 1)
        pipe.hset(counts, "last_ts", event.ts)
        pipe.hincrby(keys.item_stats(event.item_id), event.action, 1)
        if polarity(event) > 0:
            pipe.zincrby(keys.popular, 1, event.item_id)
    elif event.type == "preference":
        pipe.hset(
            keys.user_counts(event.user_id),
            mapping={f"pref:{name}": weight for name, weight in event.interests.items()},
        )
    elif event.type == "user_deleted":
        pipe.delete(keys.user_counts(event.user_id), keys.profile(event.user_id), keys.recs(event.user_id))


async def refresh_popular(redis, keys: Keys, k: int, now: float | None = None) -> int:  # noqa: ANN001
    """Rebuild the ready-to-serve popular list from the sorted set; returns its length.

    Items with no catalogue entry (retracted, never seen) or past their deadline are skipped.
    """
    now = time.time() if now is None else now
    ranked = await redis.zrevrange(keys.popular, 0, 3 * k - 1, withscores=True)
    if not ranked:
        return 0
    ids = [item_id.decode() for item_id, _ in ranked]
    docs = await redis.mget([keys.item(i) for i in ids])
    entries = []
    for (item_id, (_, score)), doc in zip(zip(ids, ranked), docs):
        if doc is None:
            continue
        item = orjson.loads(doc)
        if item.get("deadline") is not None and item["deadline"] < now:
            continue
        entries.append({"item_id": item_id, "score": score, "item": item})
        if len(entries) == k:
            break
    current = await redis.get(keys.popular_list)
    if current is not None and orjson.loads(current)["items"] == entries:
        return len(entries)  # unchanged: leave it, so redelivery and idle timers write nothing
    await redis.set(keys.popular_list, orjson.dumps({"items": entries, "updated_at": now}))
    return len(entries)


def register(ctx) -> None:  # noqa: ANN001 - streams.app.WorkerContext (import cycle)
    # The interactions agent itself is the recommender's (streams/recommend.py), which
    # applies these counters along with its learning.
    @ctx.app.timer(interval=1.0)
    async def publish_popular() -> None:
        await with_redis_retry(
            "popular refresh", lambda: refresh_popular(ctx.redis, ctx.keys, ctx.settings.popular_k)
        )
