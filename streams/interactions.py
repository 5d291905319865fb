"""Interactions: what users do with items, their declared interests and 'forget me'.

Counts per user and per item by action, and global popularity of positively received
items: each worker adds to one Redis sorted set with ZINCRBY, which is commutative, so N
workers count as one. The cold-start list is the recommender's (streams/recommend.py): its
learned new-user blend, not this all-time count.
"""

from __future__ import annotations

import logging

from schemas.events import InteractionEvent, PreferenceEvent, UserDeletedEvent
from schemas.keys import Keys
from streams.pipeline import Effects

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
