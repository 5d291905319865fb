"""The simulated web is deterministic, takes its truth from the simulator and records changes."""

from __future__ import annotations

from collections import Counter
from typing import Any
from unittest.mock import create_autospec

import pytest

from deploy.example_scraper import SimulatedWeb, WebChange, run
from deploy.scraper_client import ScraperClient
from deploy.simulator import SimConfig, Simulator
from schemas.events import ScrapeAttemptEvent, validate_event


def history(web: SimulatedWeb, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        domain = web.next_domain()
        out.append(web.attempt(domain, web.best_strategy(domain)))
    return out


def churning(seed: int) -> SimulatedWeb:
    return SimulatedWeb(seed=seed, n_domains=5, break_per_attempt=0.01, recover_per_attempt=0.05)


def test_same_seed_same_attempts_and_changes_other_seed_other() -> None:
    first, again, other = churning(4), churning(4), churning(5)
    attempts = history(first, 3_000)
    assert history(again, 3_000) == attempts
    assert again.changes == first.changes
    assert len(first.changes) > 20
    assert history(other, 3_000) != attempts


def test_per_second_churn_is_deterministic_and_timed() -> None:
    def timeline(seed: int) -> list[WebChange]:
        web = SimulatedWeb(seed=seed, break_per_s=0.01, recover_per_s=0.05)
        for _ in range(200):
            web.advance(0.5)
        return web.changes

    changes = timeline(1)
    assert changes == timeline(1) != timeline(2)
    assert len(changes) > 10
    assert all(c.attempt == 0 and c.at_s in {0.5 * k for k in range(1, 201)} for c in changes)
    assert [c.at_s for c in changes] == sorted(c.at_s for c in changes)


def test_truth_comes_from_the_simulator() -> None:
    web = SimulatedWeb(seed=9, n_domains=6)
    sim = Simulator(SimConfig(seed=9, n_domains=6))
    assert web.domains == sim.domains and web.strategies == sim.config.strategies
    for d in web.domains:
        assert web.best_strategy(d) == sim.best_strategy(d)
        for s in web.strategies:
            assert web.success_probability(d, s) == sim.success_probability(d, s)
            assert web.median_latency_ms(d, s) > 0


def test_a_break_is_recorded_moves_the_oracle_and_blocks_the_strategy() -> None:
    web = SimulatedWeb(seed=2, n_domains=3)
    domain = web.domains[1]
    best = web.best_strategy(domain)
    history(web, 40)
    web.advance(12.5)
    web.break_strategy(domain, best)
    web.break_strategy(domain, best)  # already broken: nothing new happens
    assert web.changes == [WebChange(domain, best, "break", 12.5, 40)]
    assert web.is_broken(domain, best) and web.best_strategy(domain) != best
    assert web.success_probability(domain, best) == SimConfig().broken_success_prob

    outcomes = [web.attempt(domain, best) for _ in range(500)]
    failures = [o for o in outcomes if not o["success"]]
    assert len(failures) >= 480
    assert {(o["error_type"], o.get("http_status")) for o in failures} <= {("http_403", 403), ("captcha", 200)}

    web.recover(domain, best)
    assert web.changes[-1] == WebChange(domain, best, "recover", 12.5, 540)
    assert web.best_strategy(domain) == best


def test_one_strategy_is_kept_working_unless_told_otherwise() -> None:
    kept = SimulatedWeb(seed=1, n_domains=4, break_per_attempt=1.0)
    history(kept, 50)
    for d in kept.domains:
        assert sum(not kept.is_broken(d, s) for s in kept.strategies) == 1
    all_broken = SimulatedWeb(seed=1, n_domains=4, break_per_attempt=1.0, keep_one_working=False)
    history(all_broken, 50)
    assert all(all_broken.is_broken(d, s) for d in all_broken.domains for s in all_broken.strategies)


def test_attempts_are_valid_scrape_attempts_shaped_like_the_simulators() -> None:
    web = churning(6)
    attempts = history(web, 2_000)
    for fields in attempts:
        assert isinstance(validate_event({"type": "scrape_attempt", **fields}), ScrapeAttemptEvent)
        if fields["success"]:
            assert fields["http_status"] == 200 and fields["items_found"] >= 0 and "error_type" not in fields
        else:
            assert fields["items_found"] == 0 and fields["error_type"]
    share = sum(a["success"] for a in attempts) / len(attempts)
    assert 0.75 < share < 0.97  # mostly the best strategy, which works 90-97% of the time
    assert Counter(a["domain"] for a in attempts).keys() == set(web.domains)


def test_unknown_names_and_bad_rates_are_refused() -> None:
    web = SimulatedWeb()
    with pytest.raises(ValueError, match="unknown domain 'nowhere.example'"):
        web.attempt("nowhere.example", "api")
    with pytest.raises(ValueError, match="unknown strategy 'telepathy'"):
        web.attempt(web.domains[0], "telepathy")
    with pytest.raises(ValueError, match="break_per_attempt must be a probability"):
        SimulatedWeb(break_per_attempt=1.5)
    with pytest.raises(ValueError, match="time does not go backwards"):
        web.advance(-1.0)


def test_run_asks_the_client_reports_each_attempt_and_stops_at_the_limit() -> None:
    web = SimulatedWeb(seed=8, n_domains=3)
    client = create_autospec(ScraperClient, spec_set=True, instance=True)
    client.strategy_for.return_value = "api"
    client.choose.side_effect = lambda domain: "rss" if domain == web.domains[0] else "api"
    stats = run(client, web, rate=0, limit=250)

    reported = [c.args[0] for c in client.report.call_args_list]
    assert stats.attempts == len(reported) == 250
    assert all(r["strategy"] == ("rss" if r["domain"] == web.domains[0] else "api") for r in reported)
    assert stats.explored == sum(r["domain"] == web.domains[0] for r in reported)
    assert stats.successes == sum(r["success"] for r in reported)
    assert stats.on_best == sum(r["strategy"] == web.best_strategy(r["domain"]) for r in reported)
    assert client.poll.call_count == 2  # every 100 attempts when running flat out


def test_the_demo_producer_can_leave_scraping_to_the_scraper() -> None:
    events = Simulator(SimConfig(weight_scrape=0.0)).take(5_000)
    kinds = Counter(e["type"] for e in events)
    assert kinds["scrape_attempt"] == 0 and kinds["interaction"] > 3_000
    for event in events[:500]:
        validate_event(event)
