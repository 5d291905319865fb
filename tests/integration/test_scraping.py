"""Self-healing scrapers end to end: attempts through the real broker into a real worker,
strategy switches out to a kafka-python consumer, read models and pins through the API."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.conftest import Stack, post_events, until, wait_caught_up

DOMAIN = "shop.example"
ADMIN = {"X-API-Key": "admin-secret"}


def attempts(strategy: str, outcomes: str, t0: float, domain: str = DOMAIN) -> list[dict]:
    return [
        {"type": "scrape_attempt", "domain": domain, "strategy": strategy, "success": ch == "1",
         "ts": t0 + i, "latency_ms": 700.0 + i, **({} if ch == "1" else {"error_type": "captcha"}),
         **({"items_found": 12} if ch == "1" else {})}
        for i, ch in enumerate(outcomes)
    ]


def switches(stack: Stack, expect: int) -> list[dict]:
    return [orjson.loads(r.value) for r in stack.consume_all("strategy-switches", expect=expect, idle_s=4.0)]


@pytest.fixture
def scraping(stack: Stack) -> Stack:
    stack.extra_env = {"admin_api_key": ADMIN["X-API-Key"]}
    stack.start_worker()
    stack.start_api()
    return stack


def test_five_failures_in_a_row_give_exactly_one_switch(scraping: Stack) -> None:
    api = scraping.api_url
    post_events(api, attempts("requests", "1" * 30, 1000.0) + attempts("api", "11111", 1030.0))
    scraping.wait_applied("scrape-attempts", 35)
    doc = httpx.get(f"{api}/api/strategies/{DOMAIN}").json()
    assert (doc["current"], doc["trigger"], doc["switches"]) == ("requests", "observed", [])

    # Five failures, then ten more still in flight on the old strategy: one switch only.
    post_events(api, attempts("requests", "0" * 15, 1040.0))
    scraping.wait_applied("scrape-attempts", 50)
    (switch,) = switches(scraping, expect=1)
    assert {k: switch[k] for k in ("type", "domain", "from_strategy", "to_strategy", "decision_id", "ts")} == {
        "type": "strategy_switch", "domain": DOMAIN, "from_strategy": "requests", "to_strategy": "api",
        "decision_id": f"{DOMAIN}:1", "ts": 1044.0,
    }
    assert switch["reason"] == "5 consecutive failures of 'requests' (last error: captcha)"
    assert switch["params"]["strategies"] == ["api", "requests"] and switch["params"]["trigger"] == "consecutive_failures"
    assert switch["params"]["retries"] in (1, 2, 3) and switch["params"]["timeout_ms"] >= 1000

    doc = httpx.get(f"{api}/api/strategies/{DOMAIN}").json()
    assert (doc["current"], doc["trigger"]) == ("api", "consecutive_failures")
    assert [(s["from"], s["to"]) for s in doc["switches"]] == [("requests", "api")]
    stats = doc["strategies"]["requests"]
    assert (stats["attempts"], stats["successes"], stats["consecutive_failures"]) == (45, 30, 15)
    assert stats["errors"] == {"captcha": 15} and stats["tripped"].startswith("5 consecutive failures")
    assert stats["last_hour"] == {"attempts": 45, "success_rate": 30 / 45}
    only_stats = httpx.get(f"{api}/api/strategies/{DOMAIN}/stats").json()
    assert only_stats == {"domain": DOMAIN, "strategies": doc["strategies"]}

    # The registry lists the selector beside the other models, with the same figures.
    (selector,) = [m for m in httpx.get(f"{api}/api/models").json()["models"] if m["name"] == "strategy"]
    metrics = selector["versions"][0]["metrics"]
    assert (selector["serving"], metrics["domains"], metrics["attempts"], metrics["recent_switches"]) == ("v1", 1, 50, 1)
    assert metrics["success_rate"] == 35 / 50

    report = httpx.get(f"{api}/api/scraping/analytics").json()
    assert report["by_strategy"]["requests"]["attempts"] == 45
    assert report["by_strategy"]["api"]["domains_in_use"] == 1
    assert report["errors"] == {"captcha": 15}
    assert [(s["domain"], s["to"]) for s in report["switches_last_day"]] == [(DOMAIN, "api")]
    sources = httpx.get(f"{api}/api/scraping/sources").json()["sources"]
    assert [(s["source"], s["success_rate"]) for s in sources] == [(DOMAIN, 1.0)]


def test_pins_need_the_admin_key_and_hold_the_domain(scraping: Stack) -> None:
    api = scraping.api_url
    post_events(api, attempts("requests", "1" * 10, 1000.0) + attempts("rss", "1", 1010.0))
    scraping.wait_applied("scrape-attempts", 11)
    resp = httpx.post(f"{api}/api/strategies/{DOMAIN}/pin", json={"strategy": "rss"})
    assert resp.status_code == 401 and resp.json() == {"detail": "missing X-API-Key header (admin key required)"}
    resp = httpx.post(f"{api}/api/strategies/{DOMAIN}/pin", json={"strategy": "rss", "extra": 1}, headers=ADMIN)
    assert resp.status_code == 422
    # A misspelt strategy is refused, not added for good to the strategies scrapers see.
    resp = httpx.post(f"{api}/api/strategies/{DOMAIN}/pin", json={"strategy": "rs"}, headers=ADMIN)
    assert (resp.status_code, resp.json()) == (422, {"detail": [
        {"field": "strategy", "reason": "unknown strategy 'rs'; known: requests, rss"}]})
    # Pins are not for producers: POST /api/events refuses them.
    resp = httpx.post(api + "/api/events", json=[{"type": "strategy_pin", "domain": DOMAIN, "strategy": "rss"}])
    assert resp.status_code == 422

    resp = httpx.post(f"{api}/api/strategies/{DOMAIN}/pin", json={"strategy": "rss", "by": "ops"}, headers=ADMIN)
    assert resp.status_code == 202
    scraping.wait_applied("scrape-attempts", 12)
    (switch,) = switches(scraping, expect=1)
    assert (switch["to_strategy"], switch["reason"], switch["params"]["trigger"]) == ("rss", "pinned by ops", "pinned")
    post_events(api, attempts("rss", "0" * 20, 2000.0))  # pinned: failures do not move it
    scraping.wait_applied("scrape-attempts", 32)
    doc = httpx.get(f"{api}/api/strategies/{DOMAIN}").json()
    assert (doc["current"], doc["pinned"]) == ("rss", "rss")
    assert len(switches(scraping, expect=1)) == 1

    assert httpx.delete(f"{api}/api/strategies/{DOMAIN}/pin", headers=ADMIN).status_code == 202
    post_events(api, attempts("rss", "0" * 5, 3000.0))
    scraping.wait_applied("scrape-attempts", 38)
    got = switches(scraping, expect=2)
    assert [s["to_strategy"] for s in got] == ["rss", "requests"]
    assert httpx.get(f"{api}/api/strategies/{DOMAIN}").json()["pinned"] is None


def test_bad_attempts_are_dead_lettered_and_never_counted(scraping: Stack) -> None:
    good = orjson.dumps(attempts("requests", "1", 1000.0)[0])
    bad = [
        orjson.dumps({**attempts("requests", "1", 1001.0)[0], "latency_ms": -5.0}),
        orjson.dumps({**attempts("requests", "0", 1002.0)[0], "sucess": True}),
    ]
    scraping.produce("scrape-attempts", [bad[0], good, bad[1]], [DOMAIN.encode()] * 3)
    scraping.wait_applied("scrape-attempts", 1)
    letters = [orjson.loads(r.value) for r in scraping.consume_all("dead-letters", expect=2)]
    assert [d["reason"] for d in letters] == [
        "latency_ms: Input should be greater than or equal to 0",
        "sucess: Extra inputs are not permitted",
    ]
    wait_caught_up(scraping, ["scrape-attempts"])
    stats = httpx.get(f"{scraping.api_url}/api/strategies/{DOMAIN}").json()["strategies"]["requests"]
    assert (stats["attempts"], stats["successes"]) == (1, 1)
    resp = httpx.post(scraping.api_url + "/api/events", json=[orjson.loads(bad[0])])
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["field"] == "latency_ms"


def test_a_restarted_worker_resumes_the_selector_from_redis(scraping: Stack) -> None:
    api = scraping.api_url
    post_events(api, attempts("requests", "1" * 20, 1000.0) + attempts("api", "1" * 10, 1020.0)
         + attempts("rss", "1" * 5, 1030.0) + attempts("requests", "00000", 1040.0))
    scraping.wait_applied("scrape-attempts", 40)
    assert [s["decision_id"] for s in switches(scraping, expect=1)] == [f"{DOMAIN}:1"]
    wait_caught_up(scraping, ["scrape-attempts"])
    scraping.children.stop_one("worker")
    scraping.redis.hdel(scraping.keys.workers, *scraping.redis.hkeys(scraping.keys.workers))
    scraping.start_worker("worker2")
    post_events(api, attempts("api", "00000", 2000.0))
    scraping.wait_applied("scrape-attempts", 45)
    got = switches(scraping, expect=2)
    # The new worker knew the choice (api) and the sequence: no repeat of decision 1.
    assert [(s["decision_id"], s["from_strategy"], s["to_strategy"]) for s in got] == [
        (f"{DOMAIN}:1", "requests", "api"), (f"{DOMAIN}:2", "api", "rss"),
    ]


def test_the_scraper_client_reports_attempts_and_applies_the_one_switch(scraping: Stack) -> None:
    from deploy.scraper_client import ScraperClient

    with ScraperClient(scraping.settings, [DOMAIN], default_strategy="requests", linger_s=0.05) as client:
        for event in attempts("requests", "1" * 20, 1000.0) + attempts("api", "1" * 5, 1020.0):
            client.report(event)
        client.flush()
        scraping.wait_applied("scrape-attempts", 25)
        assert client.strategy_for(DOMAIN) == "requests" and client.current(DOMAIN) is None
        for event in attempts(client.strategy_for(DOMAIN), "00000", 1030.0):
            client.report(event)
        client.flush()
        until(lambda: client.poll(200) or client.strategy_for(DOMAIN) == "api")
        choice = client.current(DOMAIN)
        assert (choice.strategy, choice.from_strategy, choice.decision_id) == ("api", "requests", f"{DOMAIN}:1")
        assert choice.strategies == ("api", "requests")
    (switch,) = switches(scraping, expect=1)
    assert switch["decision_id"] == f"{DOMAIN}:1"


def scraped_items(rng, n: int, start: int, *, titles: bool = True) -> list[dict]:  # noqa: ANN001
    vocab = [f"tag{i}" for i in range(40)]
    words = "open call residency grant prize fellowship painting sculpture photo award".split()
    return [
        {"type": "item", "item_id": f"n{start + i}", "domain": "news.example", "source": "news",
         "url": f"https://news.example/{start + i}", "category": "art",
         "tags": rng.sample(vocab[: rng.randint(5, 40)], rng.randint(1, 4)),
         **({"title": " ".join(rng.choices(words, k=rng.randint(2, 8)))} if titles else {}),
         **({"deadline": 2_000_000_000 + i} if rng.random() < 0.7 else {})}
        for i in range(n)
    ]


def test_items_whose_titles_vanish_bring_one_rescrape_request(scraping: Stack) -> None:
    import random

    rng = random.Random(4)
    api = scraping.api_url
    stable = scraped_items(rng, 600, 0)
    broken = scraped_items(rng, 300, 600, titles=False)
    for first in range(0, 900, 100):
        post_events(api, (stable + broken)[first : first + 100])
    scraping.wait_applied("items", 900)
    requests = until(lambda: scraping.consume_all("rescrape-requests", expect=1, idle_s=2.0))
    (request,) = [orjson.loads(r.value) for r in requests]
    assert (request["source"], request["domain"]) == ("news.example", "news.example")
    assert request["reason"].startswith("items of news.example shifted: ")
    assert "title" in request["reason"]
    alerts = [orjson.loads(r.value) for r in scraping.consume_all("alerts", expect=1, idle_s=2.0)]
    assert [(a["kind"], a["subject"], a["severity"]) for a in alerts] == [("scrape_anomaly", "news.example", "warning")]
    (source,) = httpx.get(f"{api}/api/scraping/sources").json()["sources"]
    assert source["source"] == "news.example" and source["anomalies"] == 1
    assert source["last_anomaly"]["feature"] == "missing_title"
    assert 600 < source["last_anomaly"]["index"] <= 800 and source["reliability"] == 0.5
