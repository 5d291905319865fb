"""The topic catalogue: every Kafka topic Eddy reads or writes, its key and partitions.

Topics are declared up front (``eddy topics create`` or the worker at start) and never left
to broker auto-creation. Events that must meet in one worker share a topic and a key:
a bid and its outcome are both keyed by ``bid_id`` on ``bids``; a user's interactions,
preferences and deletion are all keyed by ``user_id`` on ``interactions``.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its logical name, the event field that keys it, and who writes it."""

    name: str
    key_field: str | None
    types: tuple[str, ...]
    inbound: bool
    configs: tuple[tuple[str, str], ...] = ()  # topic configs Eddy creates it with

    def full_name(self, settings: Settings) -> str:
        return f"{settings.topic_prefix}{self.name}"


ITEMS = TopicSpec("items", "item_id", ("item",), inbound=True)
INTERACTIONS = TopicSpec(
    "interactions", "user_id", ("interaction", "preference", "user_deleted"), inbound=True
)
#: Operators' pins travel with the attempts, so the worker owning a domain sees both in order.
SCRAPE_ATTEMPTS = TopicSpec("scrape-attempts", "domain", ("scrape_attempt", "strategy_pin"), inbound=True)
BIDS = TopicSpec("bids", "bid_id", ("bid", "bid_outcome"), inbound=True)
#: Compacted: keyed by domain, the log keeps every domain's latest decision for new scrapers.
STRATEGY_SWITCHES = TopicSpec(
    "strategy-switches", "domain", ("strategy_switch",), inbound=False, configs=(("cleanup.policy", "compact"),)
)
ALERTS = TopicSpec("alerts", "subject", ("alert",), inbound=False)
RESCRAPE_REQUESTS = TopicSpec("rescrape-requests", "source", ("rescrape_request",), inbound=False)
DEAD_LETTERS = TopicSpec("dead-letters", None, (), inbound=False)

CATALOGUE: tuple[TopicSpec, ...] = (
    ITEMS,
    INTERACTIONS,
    SCRAPE_ATTEMPTS,
    BIDS,
    STRATEGY_SWITCHES,
    ALERTS,
    RESCRAPE_REQUESTS,
    DEAD_LETTERS,
)

TOPIC_OF_TYPE: dict[str, TopicSpec] = {t: spec for spec in CATALOGUE for t in spec.types}


def route(event_type: str) -> TopicSpec:
    """The topic an event of this type goes to."""
    return TOPIC_OF_TYPE[event_type]


def key_of(event: object) -> bytes | None:
    """The partitioning key of an event: its topic's key field, UTF-8 encoded."""
    spec = TOPIC_OF_TYPE[event.type]
    if spec.key_field is None:
        return None
    value = getattr(event, spec.key_field, None)
    if value is None and spec is RESCRAPE_REQUESTS:
        value = getattr(event, "domain", None)
    return None if value is None else str(value).encode()
