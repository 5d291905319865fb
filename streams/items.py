"""Items: the catalogue of scraped and published things, kept in Redis for rendering.

An update replaces the item; a retracted item is removed from the catalogue and from the
popular list, so it is never served again.
"""

from __future__ import annotations

import orjson

from schemas.events import ItemEvent
from schemas.keys import Keys
from schemas.topics import ITEMS
from streams.pipeline import Effects


#: Item events kept in the catalogue stream (approximately; trimmed by Redis).
CATALOGUE_MAXLEN = 200_000


def apply_item(pipe: Effects, event: ItemEvent, keys: Keys) -> None:
    """Queue the writes of one item event."""
    doc = orjson.dumps(event.model_dump(mode="json", exclude_none=True))
    # Every worker follows this stream to know the whole catalogue, whichever partitions
    # of the items topic it owns (see streams/recommend.py).
    pipe.xadd(keys.catalogue, {"item": doc}, maxlen=CATALOGUE_MAXLEN)
    if event.retracted:
        pipe.delete(keys.item(event.item_id))
        pipe.zrem(keys.popular, event.item_id)
        return
    pipe.set(keys.item(event.item_id), doc)


def register(ctx) -> None:  # noqa: ANN001 - streams.app.WorkerContext (import cycle)
    ctx.consume(ITEMS, apply_item, name="catalogue_items")
