"""The simulator's stream is valid, deterministic and shaped like real traffic."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from statistics import mean
from typing import Any

import pytest

from deploy.simulator import SimConfig, Simulator
from schemas.events import validate_event

N = 20_000


@pytest.fixture(scope="module")
def run() -> tuple[Simulator, list[dict[str, Any]]]:
    sim = Simulator(SimConfig())
    return sim, sim.take(N)


@pytest.fixture(scope="module")
def stream(run: tuple[Simulator, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return run[1]


def of_type(stream: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in stream if e["type"] == kind]


def test_every_event_validates_and_is_json_ready(stream: list[dict[str, Any]]) -> None:
    for event in stream:
        validate_event(event)
    assert json.loads(json.dumps(stream)) == stream
    assert {e["type"] for e in stream} == {
        "item", "interaction", "preference", "user_deleted", "scrape_attempt", "bid", "bid_outcome",
    }


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    first = Simulator(SimConfig(seed=11)).take(2_000)
    assert Simulator(SimConfig(seed=11)).take(2_000) == first
    assert Simulator(SimConfig(seed=12)).take(2_000) != first


def test_take_continues_the_stream() -> None:
    sim = Simulator(SimConfig(seed=3))
    assert sim.take(300) + sim.take(200) == Simulator(SimConfig(seed=3)).take(500)


def test_time_is_monotonic_and_ids_are_unique(stream: list[dict[str, Any]]) -> None:
    ts = [e["ts"] for e in stream]
    assert ts[0] >= SimConfig().start_ts
    assert all(a <= b for a, b in zip(ts, ts[1:]))
    assert len({e["event_id"] for e in stream}) == len(stream)
    assert stream[0]["event_id"] == "sim-7-0"


def test_event_mix_follows_the_weights(stream: list[dict[str, Any]]) -> None:
    share = {k: v / N for k, v in Counter(e["type"] for e in stream).items()}
    assert 0.62 < share["interaction"] + share["preference"] < 0.78
    assert 0.06 < share["item"] < 0.10
    assert 0.12 < share["scrape_attempt"] < 0.18
    assert 0.025 < share["bid"] < 0.05


def test_interactions_only_touch_emitted_live_items(stream: list[dict[str, Any]]) -> None:
    deadline: dict[str, float | None] = {}
    retracted: set[str] = set()
    for e in stream:
        if e["type"] == "item":
            deadline.setdefault(e["item_id"], e.get("deadline"))
            if e["retracted"]:
                retracted.add(e["item_id"])
        elif e["type"] == "interaction":
            assert e["item_id"] in deadline, e
            assert e["item_id"] not in retracted, e
            end = deadline[e["item_id"]]
            assert end is None or e["ts"] < end, e


def test_items_keep_appearing_and_look_scraped(stream: list[dict[str, Any]]) -> None:
    sim_domains = {f"site-{d}.example" for d in range(SimConfig().n_domains)}
    new = [e for e in of_type(stream, "item") if not e["retracted"]]
    assert len(new) > SimConfig().n_items  # the catalogue turns over
    assert new[len(new) // 2]["ts"] > stream[N // 4]["ts"]  # not all at the start
    for e in new:
        assert 2 <= len(e["tags"]) <= 4 and len(set(e["tags"])) == len(e["tags"])
        assert e["domain"] in sim_domains and e["url"].startswith(f"https://{e['domain']}/")
        assert e["category"] in SimConfig().categories and e["attributes"] == {}
    with_deadline = [e for e in new if "deadline" in e]
    assert 0.2 < len(with_deadline) / len(new) < 0.6
    assert all(86_400 <= e["deadline"] - e["ts"] <= 5 * 86_400 for e in with_deadline)


def test_tags_correlate_with_category(stream: list[dict[str, Any]]) -> None:
    pairs = Counter((e["category"], t) for e in of_type(stream, "item") for t in e["tags"])
    per_category = Counter(c for c, _ in pairs.elements())
    for category, total in per_category.items():
        top5 = sorted((n for (c, _), n in pairs.items() if c == category), reverse=True)[:5]
        assert sum(top5) / total > 0.6  # 40 tags, yet five carry most of a category


def test_clicks_have_a_long_tail(stream: list[dict[str, Any]]) -> None:
    clicks = Counter(e["item_id"] for e in of_type(stream, "interaction") if e["action"] == "click")
    n_items = len({e["item_id"] for e in of_type(stream, "item")})
    top = sorted(clicks.values(), reverse=True)[: n_items // 10]
    assert sum(top) / sum(clicks.values()) > 0.4


def test_user_activity_has_a_long_tail(stream: list[dict[str, Any]]) -> None:
    per_user = Counter(e["user_id"] for e in stream if "user_id" in e)
    assert sum(n <= 2 for n in per_user.values()) / len(per_user) > 0.2
    assert max(per_user.values()) > 100


def test_sessions_are_well_formed(stream: list[dict[str, Any]]) -> None:
    interactions = of_type(stream, "interaction")
    actions = Counter(e["action"] for e in interactions)
    assert set(actions) == {"impression", "click", "view", "like", "dislike", "rate", "save", "hide"}
    assert actions["impression"] > actions["click"] > actions["like"]
    assert all(0 <= e["position"] <= 9 for e in interactions if e["action"] == "impression")
    assert all(e.get("rec_id") for e in interactions if e["action"] == "impression")
    rates = [e["value"] for e in interactions if e["action"] == "rate"]
    assert rates and all(v in (1.0, 2.0, 3.0, 4.0, 5.0) for v in rates)
    repeats = Counter((e["user_id"], e["item_id"]) for e in interactions if e["action"] == "click")
    assert any(n > 1 for n in repeats.values())


def test_ratings_follow_affinity(run: tuple[Simulator, list[dict[str, Any]]]) -> None:
    sim, stream = run
    rates = [e for e in of_type(stream, "interaction") if e["action"] == "rate"]
    high = [sim.affinity(e["user_id"], e["item_id"]) for e in rates if e["value"] >= 4]
    low = [sim.affinity(e["user_id"], e["item_id"]) for e in rates if e["value"] <= 2]
    assert mean(high) > mean(low) + 0.2


def test_preferences_come_first_and_are_weights(stream: list[dict[str, Any]]) -> None:
    first: dict[str, str] = {}
    for e in stream:
        if "user_id" in e:
            first.setdefault(e["user_id"], e["type"])
    prefs = of_type(stream, "preference")
    assert prefs
    for e in prefs:
        assert first[e["user_id"]] == "preference"
        assert e["interests"] and all(0 <= w <= 1 for w in e["interests"].values())
        assert max(e["interests"].values()) == 1.0


def test_deleted_users_go_silent(run: tuple[Simulator, list[dict[str, Any]]]) -> None:
    sim, stream = run
    deletions = of_type(stream, "user_deleted")
    assert deletions and {e["user_id"] for e in deletions} == sim.deleted_users
    gone: set[str] = set()
    for e in stream:
        assert e.get("user_id") not in gone, e
        if e["type"] == "user_deleted":
            gone.add(e["user_id"])


def test_scrape_attempts_are_complete(stream: list[dict[str, Any]]) -> None:
    attempts = of_type(stream, "scrape_attempt")
    assert {e["strategy"] for e in attempts} <= set(SimConfig().strategies)
    for e in attempts:
        assert e["latency_ms"] > 0 and e["scraper_id"]
        if e["success"]:
            assert e["http_status"] == 200 and "error_type" not in e
        else:
            assert e["error_type"] in {"timeout", "http_403", "parse_error", "captcha", "http_503"}
            assert e["items_found"] == 0


def test_broken_strategy_fails_and_working_one_succeeds() -> None:
    sim = Simulator(SimConfig(strategy_break_prob=0.0, strategy_recover_prob=0.0))
    broken, working = sim.domains[0], sim.domains[1]
    strategy = sim.current_strategy[broken]
    sim.break_strategy(broken, strategy)
    assert sim.is_broken(broken, strategy) and sim.best_strategy(broken) != strategy
    attempts = of_type(sim.take(N), "scrape_attempt")

    def success_rate(domain: str) -> float:
        mine = [e["success"] for e in attempts if e["domain"] == domain]
        assert len(mine) > 100
        return mean(mine)

    assert success_rate(broken) < 0.1
    assert success_rate(working) > 0.8
    assert sim.success_probability(working, sim.current_strategy[working]) >= 0.9


def test_apply_switch_steers_the_scrapers() -> None:
    sim = Simulator(SimConfig(strategy_break_prob=0.0, strategy_recover_prob=0.0))
    domain = sim.domains[2]
    old = sim.current_strategy[domain]
    sim.break_strategy(domain, old)
    sim.apply_switch(domain, sim.best_strategy(domain))
    attempts = [e for e in of_type(sim.take(N), "scrape_attempt") if e["domain"] == domain]
    assert {e["strategy"] for e in attempts} == {sim.best_strategy(domain)}
    assert mean(e["success"] for e in attempts) > 0.6  # the fallback is decent, not perfect
    sim.recover(domain, old)
    assert not sim.is_broken(domain, old) and sim.best_strategy(domain) == old
    with pytest.raises(ValueError, match="unknown strategy"):
        sim.apply_switch(domain, "carrier-pigeon")


def test_strategies_break_and_recover_on_their_own() -> None:
    sim = Simulator(SimConfig(strategy_break_prob=0.05, strategy_recover_prob=0.05))
    broken_seen = False
    for _ in range(40):
        sim.take(500)
        broken_seen |= any(sim.is_broken(d, s) for d in sim.domains for s in sim.config.strategies)
    assert broken_seen
    assert not all(sim.is_broken(d, sim.current_strategy[d]) for d in sim.domains)


def test_bid_outcomes_come_later_and_follow_the_ground_truth(
    run: tuple[Simulator, list[dict[str, Any]]],
) -> None:
    sim, stream = run
    bids = {e["bid_id"]: (i, e) for i, e in enumerate(stream) if e["type"] == "bid"}
    outcomes = [(i, e) for i, e in enumerate(stream) if e["type"] == "bid_outcome"]
    assert len(outcomes) > 200
    assert len({e["bid_id"] for _, e in outcomes}) == len(outcomes)
    for i, outcome in outcomes:
        j, bid = bids[outcome["bid_id"]]
        assert i - j > 100 and outcome["ts"] - bid["ts"] >= 86_400
    probs = [sim.true_win_probability(e) for _, e in bids.values()]
    assert all(0 < p < 1 for p in probs)
    won = [sim.true_win_probability(bids[e["bid_id"]][1]) for _, e in outcomes if e["won"]]
    lost = [sim.true_win_probability(bids[e["bid_id"]][1]) for _, e in outcomes if not e["won"]]
    assert won and lost and mean(won) > mean(lost) + 0.1


def test_win_probability_rewards_fit_and_punishes_price(run: tuple[Simulator, list[dict[str, Any]]]) -> None:
    sim, stream = run
    bid = dict(of_type(stream, "bid")[0])
    cheap, dear = dict(bid, amount=bid["amount"] / 2), dict(bid, amount=bid["amount"] * 2)
    assert sim.true_win_probability(cheap) > sim.true_win_probability(bid) > sim.true_win_probability(dear)
    skilled = dict(bid, profile={**bid["profile"], "skills": bid["job_text"].rstrip(".").split(": ")[1].split(", ")})
    unskilled = dict(bid, profile={**bid["profile"], "skills": []})
    assert sim.true_win_probability(skilled) > sim.true_win_probability(unskilled)


def test_some_bids_never_get_an_outcome() -> None:
    sim = Simulator(replace(SimConfig(), weight_bid=0.5, outcome_delay_days=(0.01, 0.02)))
    stream = sim.take(N)
    bids = {e["bid_id"] for e in of_type(stream, "bid")}
    settled = {e["bid_id"] for e in of_type(stream, "bid_outcome")}
    missing = len(bids - settled) / len(bids)
    assert 0.02 < missing < 0.10


def test_the_demo_runs_on_the_wall_clock() -> None:
    """`eddy simulate` (the demo producer): a day of history up to now, never a ts from the
    future, so its items' deadlines and bids' outcomes fall around the real time beside a
    user's own events (issue 18: a simulator starting on a fixed date expired everything)."""
    import itertools
    import time

    from deploy.feeder import DEMO_HISTORY_S, demo_simulator, on_the_wall_clock

    started = time.time()
    events = list(itertools.islice(on_the_wall_clock(demo_simulator(7).events()), 20_000))
    finished = time.time()
    assert started - DEMO_HISTORY_S - 60 <= events[0]["ts"] <= started - DEMO_HISTORY_S + 60
    assert max(e["ts"] for e in events) <= finished
    assert sum(e["ts"] >= started - 60 for e in events) > 10_000  # the simulated clock caught up with the real one
    assert any(e["type"] == "bid_outcome" for e in events)
    assert any(e.get("deadline") and e["deadline"] > finished for e in events)
