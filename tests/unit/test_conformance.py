"""One set of checks for every online learner besides the recommenders (those are in
test_recommenders.py), as River runs its estimator checks on every estimator: a pickle
round trip reads and learns on identically, a read never changes the learner, and the same
stream always gives the same learner.

Each learner is described by how to teach it one step of a seeded stream and how to read
it; the checks are the same for all.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from online_models.bids import BidFeaturizer, WinModel
from online_models.drift import ModelHealth
from online_models.hybrid import HybridRecommender
from online_models.knn import ItemKNN
from online_models.popularity import Popularity
from online_models.strategy import DomainSelector, SelectorConfig


@dataclass(frozen=True)
class Learner:
    make: Callable[[], Any]
    learn: Callable[[Any, int, random.Random], Any]  # one step of the stream
    read: Callable[[Any], Any]  # what serving would ask of it


def _learn_bid(state: Any, n: int, rnd: random.Random) -> None:
    model, featurizer = state
    bid = {"bid_id": f"b{n}", "profile_id": f"p{n % 5}", "job_id": f"j{n % 9}", "job_title": "data work",
           "job_text": rnd.choice(["python, sql", "figma, ux", "rust"]), "job_budget": 100.0 + n % 50,
           "amount": 50.0 + rnd.random() * 100, "ts": 1_000.0 + n}
    x = featurizer.learn_bid(bid, bid["ts"])
    won = rnd.random() < 0.3
    featurizer.learn_outcome(bid["profile_id"], won, bid["ts"] + 60)
    model.learn_one(x, won)


def _read_bid(state: Any) -> Any:
    model, featurizer = state
    x = featurizer.features({"bid_id": "probe", "profile_id": "p1", "job_id": "j1", "job_title": "data work",
                             "job_text": "python", "job_budget": 120.0, "amount": 80.0}, 5_000.0)
    return round(model.predict_one(x), 12), model.top_weights(5)


def _learn_health(health: ModelHealth, n: int, rnd: random.Random) -> None:
    ts = 1_000.0 + n
    health.observe_error(float(rnd.random() < (0.3 if n < 700 else 0.9)), ts)
    health.observe_features({"item_age_h": rnd.random() * (10 if n < 700 else 100), "history": float(n % 20)}, ts)
    if n % 10 == 0:
        health.observe_ctr(20, rnd.randrange(0, 5), ts)


def _learn_strategy(sel: DomainSelector, n: int, rnd: random.Random) -> None:
    strategy = sel.current if sel.current and rnd.random() < 0.9 else rnd.choice(("api", "requests", "rss"))
    ok = rnd.random() < (0.9 if strategy != "requests" or n < 200 else 0.1)
    sel.observe(strategy, ok, 1_000.0 + n, error_type=None if ok else "captcha", latency_ms=100.0 + n % 7)


LEARNERS = {
    "bid model": Learner(lambda: (WinModel(), BidFeaturizer()), _learn_bid, _read_bid),
    "model health": Learner(lambda: ModelHealth("recommender", warmup=100, cooldown=100), _learn_health,
                            lambda h: h.summary()),
    "strategy selector": Learner(
        lambda: DomainSelector("shop.example", SelectorConfig(), ("api", "requests", "rss")), _learn_strategy,
        lambda s: s.view()),
}


def run(learner: Learner, steps: int, seed: int = 1) -> Any:
    state, rnd = learner.make(), random.Random(seed)
    for n in range(steps):
        learner.learn(state, n, rnd)
    return state


@pytest.fixture(params=sorted(LEARNERS))
def learner(request: pytest.FixtureRequest) -> Learner:
    return LEARNERS[request.param]


def test_a_pickle_round_trip_reads_and_learns_on_identically(learner: Learner) -> None:
    state = run(learner, 600)
    copy = pickle.loads(pickle.dumps(state))
    assert learner.read(copy) == learner.read(state)
    rnd_a, rnd_b = random.Random(9), random.Random(9)
    for n in range(600, 1_000):
        learner.learn(state, n, rnd_a)
        learner.learn(copy, n, rnd_b)
    assert learner.read(copy) == learner.read(state)


def test_reading_never_changes_the_learner(learner: Learner) -> None:
    state = run(learner, 800)
    before = pickle.dumps(state)
    first = learner.read(state)
    assert learner.read(state) == first
    assert pickle.dumps(state) == before


def test_the_same_stream_gives_the_same_learner(learner: Learner) -> None:
    assert learner.read(run(learner, 900, seed=3)) == learner.read(run(learner, 900, seed=3))


class Leaky:
    """A learner whose read counts itself: a mutating read."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self) -> int:
        self.reads += 1
        return 0


def test_the_checks_can_fail() -> None:
    """A learner whose read mutates it is caught: the suite is not vacuous."""
    leaky = Learner(Leaky, lambda s, n, r: None, Leaky.read)
    with pytest.raises(AssertionError):
        test_reading_never_changes_the_learner(leaky)


def test_the_recommenders_are_covered_by_their_own_suite() -> None:
    """Every recommender, the baselines included, runs through test_recommenders.py's checks."""
    import tests.unit.test_recommenders as recommenders

    assert {type(make()) for make in recommenders.MODELS.values()} == {Popularity, HybridRecommender, ItemKNN}
