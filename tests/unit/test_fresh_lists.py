"""The lists the worker writes after a batch: one per touched user, each naming the user's
events it reflects, so a client can tell when its own action has reached its list."""

from __future__ import annotations

import orjson

from schemas.events import validate_event
from schemas.keys import Keys
from schemas.settings import Settings
from streams.coalesce import Coalescer
from streams.recommend import REFLECTS, RecommenderService

KEYS = Keys("t:")


def item(n: int, category: str = "painting") -> bytes:
    return orjson.dumps({"type": "item", "event_id": f"i{n}", "ts": 1_000.0 + n, "item_id": f"it{n}",
                         "title": f"thing {n}", "category": category, "tags": [category]})


def click(n: int, user: str, item_id: str, action: str = "click") -> object:
    return validate_event({"type": "interaction", "event_id": f"e{n}", "ts": 2_000.0 + n, "user_id": user,
                           "item_id": item_id, "action": action})


def written(effects: Coalescer) -> dict[str, dict]:
    return {name: orjson.loads(value) for _, name, value in effects.soon_commands()}


def service_with_catalogue() -> RecommenderService:
    service = RecommenderService(Settings())
    for n in range(30):
        service.learn_catalogue_entry(item(n, "painting" if n % 2 else "music"))
    return service


def test_each_touched_users_list_reflects_exactly_that_users_events_of_the_batch_in_log_order() -> None:
    service, effects = service_with_catalogue(), Coalescer()
    events = [click(0, "ann", "it1"), click(1, "bob", "it2"), click(2, "ann", "it3", "impression"),
              click(3, "ann", "it5", "like")]
    for offset, event in enumerate(events):
        service.learn(effects, event, KEYS, f"0:{offset}:0")
    service.finish(effects, events, KEYS)

    docs = written(effects)
    # The touched users' lists, and the cold-start list (the model learned since it was last written).
    assert set(docs) == {KEYS.recs("ann"), KEYS.recs("bob"), KEYS.popular_list}
    assert docs[KEYS.popular_list]["model"] == "hybrid" and docs[KEYS.popular_list]["items"]
    assert docs[KEYS.recs("ann")]["reflects"] == ["e0", "e2", "e3"]
    assert docs[KEYS.recs("bob")]["reflects"] == ["e1"]
    assert {i["item_id"] for i in docs[KEYS.recs("ann")]["items"]}.isdisjoint({"it1", "it5"})  # consumed


def test_a_list_names_at_most_the_latest_events_and_a_refresh_repeats_what_the_last_batch_named() -> None:
    service, effects = service_with_catalogue(), Coalescer()
    events = [click(n, "ann", f"it{n % 30}", "impression") for n in range(REFLECTS + 5)]
    for offset, event in enumerate(events):
        service.learn(effects, event, KEYS, f"0:{offset}:0")
    service.finish(effects, events, KEYS)
    latest = [f"e{n}" for n in range(5, REFLECTS + 5)]
    assert written(effects)[KEYS.recs("ann")]["reflects"] == latest

    service.learn_catalogue_entry(item(99))  # a new item: the refresh task re-ranks active users
    refreshed = {name: orjson.loads(value) for _, name, value in service.refresh_commands(KEYS)}
    assert refreshed[KEYS.recs("ann")]["reflects"] == latest


def test_a_deleted_user_gets_no_list_from_the_batch_nor_from_a_refresh() -> None:
    service, effects = service_with_catalogue(), Coalescer()
    events = [click(0, "ann", "it1"),
              validate_event({"type": "user_deleted", "event_id": "d1", "ts": 2_010.0, "user_id": "ann"})]
    for offset, event in enumerate(events):
        service.learn(effects, event, KEYS, f"0:{offset}:0")
    service.finish(effects, events, KEYS)
    assert written(effects) == {}
    service.learn_catalogue_entry(item(99))
    assert service.refresh_commands(KEYS) == []
