"""Turns events into learning calls: one code path for the live worker and for replays.

Works on the event models of ``schemas.events`` (anything with the same attributes).
"""

from __future__ import annotations

from typing import Any

from online_models.base import ItemInfo, Recommender, signal_of


def item_info(event: Any) -> ItemInfo:
    text = " ".join(t for t in (event.title, event.text) if t)
    return ItemInfo(
        item_id=event.item_id,
        category=event.category,
        tags=tuple(event.tags),
        source=event.source or event.domain,
        domain=event.domain or event.source,
        text=text,
        deadline=event.deadline,
        ts=event.ts or 0.0,
    )


def learn_event(model: Recommender, event: Any) -> None:
    """Teach ``model`` one event of the item or interactions topics; others are ignored."""
    kind = event.type
    if kind == "item":
        if event.retracted:
            model.retract_item(event.item_id)
        else:
            model.learn_item(item_info(event))
    elif kind == "interaction":
        model.learn_interaction(event.user_id, event.item_id, signal_of(event.action, event.value), event.ts or 0.0)
    elif kind == "preference":
        model.learn_preference(event.user_id, event.interests, event.ts or 0.0)
    elif kind == "user_deleted":
        model.forget_user(event.user_id)
