"""Bids and their outcomes, joined by bid_id (both keyed by it on the bids topic).

The bid is stored on arrival and its outcome added when it lands, in one Redis hash.
"""

from __future__ import annotations

import orjson

from schemas.events import BidEvent, BidOutcomeEvent
from schemas.keys import Keys
from schemas.topics import BIDS
from streams.pipeline import Effects


def apply_bid_event(pipe: Effects, event: BidEvent | BidOutcomeEvent, keys: Keys) -> None:
    """Queue the writes of a bid or of its outcome."""
    key = keys.bid(event.bid_id)
    if event.type == "bid":
        pipe.hset(
            key,
            mapping={"bid": orjson.dumps(event.model_dump(mode="json", exclude_none=True)), "placed_at": event.ts},
        )
    else:
        pipe.hset(key, mapping={"won": int(event.won), "outcome_at": event.ts})


def register(ctx) -> None:  # noqa: ANN001 - streams.app.WorkerContext (import cycle)
    ctx.consume(BIDS, apply_bid_event, name="join_bid_outcomes")
