"""Item facts: what one worker's users teach every user, learned by the other workers once
(design in docs/scale-out.md; through Kafka and Redis in tests/integration/test_scale_out.py)."""

from __future__ import annotations

import random

import orjson

from online_models.base import ItemInfo
from online_models.hybrid import HybridRecommender
from schemas.events import validate_event
from schemas.keys import Keys
from schemas.settings import Settings
from streams.coalesce import Coalescer
from streams.recommend import RecommenderService, decode_facts

KEYS = Keys("t:")


def stream(n: int = 600, seed: int = 3) -> list[tuple[str, str, float, float]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        user = f"u{rnd.randrange(40)}"
        item = f"i{min(rnd.randrange(30), rnd.randrange(30))}"
        out.append((user, item, rnd.choice([1.0, 1.0, 2.0, -0.1, -2.0, 0.0]), 100.0 + i))
    return out


def catalogue(model: HybridRecommender) -> None:
    for n in range(30):
        model.learn_item(ItemInfo(f"i{n}", category="a" if n % 2 else "b", ts=float(n)))


def test_two_models_that_exchange_their_facts_rank_as_one_model_that_saw_everything() -> None:
    one, left, right = HybridRecommender(), HybridRecommender(), HybridRecommender()
    for model in (one, left, right):
        catalogue(model)
    left.sharing = right.sharing = True
    for user, item, signal, ts in stream():
        one.learn_interaction(user, item, signal, ts)
        mine, other = (left, right) if int(user[1:]) % 2 else (right, left)
        mine.learn_interaction(user, item, signal, ts)
        other.learn_shared(mine.shared())  # exchanged after every event: no lag
    for user in ("u1", "u2", "u7", "u10"):
        own = left if int(user[1:]) % 2 else right
        exclude = one.consumed_by(user)
        expected = [(s.item_id, round(s.score, 6)) for s in one.rank(user, 10, 800.0, exclude)]
        assert [(s.item_id, round(s.score, 6)) for s in own.rank(user, 10, 800.0, exclude)] == expected
    assert one.weights() == left.weights() == right.weights()  # one blend, learned from every user


def test_without_the_facts_the_other_model_learns_nothing_about_items() -> None:
    left, right = HybridRecommender(), HybridRecommender()
    for model in (left, right):
        catalogue(model)
    left.sharing = True
    for user, item, signal, ts in stream(200):
        left.learn_interaction(f"x{user}", item, signal, ts)
    facts = left.shared()
    assert facts and all(len(f) in (1, 4) for f in facts)
    before = right.rank("nobody", 5, 400.0)
    right.learn_shared(facts)
    assert right.rank("nobody", 5, 400.0) != before
    assert right.rank("nobody", 5, 400.0) == left.rank("nobody", 5, 400.0)


def items() -> list[bytes]:
    return [orjson.dumps({"type": "item", "event_id": f"it{n}", "ts": 1.0 + n, "item_id": f"i{n}", "category": "a"})
            for n in range(30)]


def interactions(users: list[str]) -> list:
    return [validate_event({"type": "interaction", "event_id": f"e{n}", "ts": 100.0 + n, "user_id": user,
                            "item_id": f"i{n % 7}", "action": "click"}) for n, user in enumerate(users)]


def worker(events: list, partition: int) -> tuple[RecommenderService, list[list]]:
    """A service that learned ``events`` at offsets 0.. of ``partition``, and what it published."""
    service = RecommenderService(Settings())
    for raw in items():
        service.learn_catalogue_entry(raw)
    effects = Coalescer()
    for offset, event in enumerate(events):
        service.learn(effects, event, KEYS, f"{partition}:{offset}:0")
    service.finish(effects, events, KEYS)
    published = [c for c in effects.commands() if c[0] == "XADD" and c[1] == KEYS.item_facts]
    assert len(published) == 1
    fields = dict(zip(published[0][-4::2], published[0][-3::2], strict=True))
    return service, decode_facts(fields["facts"])


def test_facts_published_twice_or_relearned_by_the_next_owner_count_once() -> None:
    events = interactions([f"a{n % 5}" for n in range(40)])
    a, facts = worker(events, partition=0)
    b = RecommenderService(Settings())
    for raw in items():
        b.learn_catalogue_entry(raw)
    b.learn_facts(facts)
    state = b.model.rank("someone", 10, 500.0)
    b.learn_facts(facts)  # republished after a crash
    assert b.model.rank("someone", 10, 500.0) == state
    assert b.versions["v1"].counted == {0: 39_000}  # offset 39, index 0
    # The partition moves to b, which relearns the log: the users' side only.
    effects = Coalescer()
    for offset, event in enumerate(events):
        b.learn(effects, event, KEYS, f"0:{offset}:0")
    assert b.model.rank("someone", 10, 500.0) == a.model.rank("someone", 10, 500.0)
    assert b.model.weights() == a.model.weights()
    assert b.model.consumed_by("a1") == a.model.consumed_by("a1")


def test_facts_of_a_partition_the_worker_owns_are_left_to_its_log() -> None:
    """A restarted worker finds its own earlier facts (published after its snapshot) in the
    stream: it must relearn those events from the log, in order, not take them ahead."""
    _, facts = worker(interactions([f"a{n % 5}" for n in range(40)]), partition=0)
    b = RecommenderService(Settings())
    for raw in items():
        b.learn_catalogue_entry(raw)
    b.owned = {0, 1}
    before = b.model.rank("someone", 10, 500.0)
    b.learn_facts(facts)
    assert b.model.rank("someone", 10, 500.0) == before and b.versions["v1"].counted == {}
    b.owned = {1}
    b.learn_facts(facts)
    assert b.model.rank("someone", 10, 500.0) != before
