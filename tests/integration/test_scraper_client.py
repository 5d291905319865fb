"""The scraper client through the real broker: it follows switches and reports attempts."""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from deploy.example_scraper import SimulatedWeb, run
from deploy.scraper_client import InvalidAttempt, ScraperClient, StrategyChoice
from deploy.topics import ensure_topics
from schemas.envelope import decode_record, partition_of
from schemas.events import validate_event
from schemas.settings import Settings

pytestmark = pytest.mark.integration

STRATEGIES = ["requests", "playwright", "api", "rss"]
MINE = ["site-1.example", "site-2.example"]


@pytest.fixture
def settings(broker: str) -> Settings:
    s = Settings(kafka_bootstrap=broker, topic_prefix=f"t{uuid.uuid4().hex[:8]}.", partitions=4)
    ensure_topics(s)
    return s


@pytest.fixture
def producer(broker: str) -> Iterator[KafkaProducer]:
    p = KafkaProducer(bootstrap_servers=broker, acks="all")
    yield p
    p.close()


@pytest.fixture
def clients(settings: Settings) -> Iterator[Callable[..., ScraperClient]]:
    made: list[ScraperClient] = []

    def make(domains: list[str] | None = MINE, **kwargs: Any) -> ScraperClient:
        client = ScraperClient(settings, domains, **{"default_strategy": "requests", **kwargs})
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def switch(domain: str, decision_id: str, to: str, frm: str | None = "requests", *, explore_rate: float = 0.05) -> dict:
    return {
        "type": "strategy_switch", "event_id": f"ev-{decision_id}", "ts": 1_767_225_600.0,
        "domain": domain, "from_strategy": frm, "to_strategy": to, "reason": f"test {decision_id}",
        "decision_id": decision_id,
        "params": {"timeout_ms": 8000.0, "retries": 2, "explore_rate": explore_rate, "strategies": STRATEGIES},
    }


def produce_switches(producer: KafkaProducer, settings: Settings, switches: list[dict]) -> None:
    """Write switches as the worker does: one plain record each, keyed by domain."""
    topic = settings.topic_prefix + "strategy-switches"
    for doc in switches:
        meta = producer.send(topic, key=doc["domain"].encode(), value=orjson.dumps(doc)).get(timeout=30)
        # The client finds a domain's switches where Kafka's default partitioner put them.
        assert meta.partition == partition_of(doc["domain"].encode(), range(settings.partitions))


def poll_until(client: ScraperClient, done: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out; client stats {client.stats}"
        client.poll(timeout_ms=100)


def read_topic(settings: Settings, name: str, *, expect: int, idle_s: float = 1.5) -> list:
    """Every record of a topic: until ``expect`` are read and then ``idle_s`` of quiet."""
    topic = settings.topic_prefix + name
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                             fetch_max_wait_ms=50)
    tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out: list = []
    deadline = time.monotonic() + 30
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = [rec for recs in consumer.poll(timeout_ms=100).values() for rec in recs]
            out.extend(batch)
            if batch:
                quiet_since = time.monotonic()
            elif len(out) >= expect and time.monotonic() - quiet_since >= idle_s:
                break
        return out
    finally:
        consumer.close()


def decoded(settings: Settings, records: list) -> list:
    events = []
    for rec in records:
        inner, is_envelope = decode_record(rec.value, max_bytes=settings.max_event_bytes)
        assert is_envelope and rec.key is None
        for event in inner:
            assert rec.partition == partition_of(event.domain.encode(), range(settings.partitions))
        events.extend(inner)
    return events


def domain_on_partition(settings: Settings, partition: int, taken: list[str]) -> str:
    """A domain this test's client does not handle but whose switches it reads anyway."""
    for n in range(1000):
        domain = f"other-{n}.example"
        if domain not in taken and partition_of(domain.encode(), range(settings.partitions)) == partition:
            return domain
    raise AssertionError("no domain found")


# -- (a) following switches -------------------------------------------------------------------


def test_a_switch_is_applied_a_repeat_and_foreign_domains_ignored(
    settings: Settings, producer: KafkaProducer, clients: Callable[..., ScraperClient]
) -> None:
    applied: list[StrategyChoice] = []
    client = clients(on_switch=applied.append)
    domain = MINE[0]
    assert client.current(domain) is None
    assert client.strategy_for(domain) == "requests" and client.choose(domain) == "requests"

    foreign = domain_on_partition(settings, partition_of(domain.encode(), range(settings.partitions)), MINE)
    produce_switches(producer, settings, [
        switch(domain, "d1", "api"),
        switch(domain, "d2", "rss", frm="api"),
        switch(domain, "d1", "api"),  # at-least-once: the first decision delivered again
        switch(foreign, "d3", "playwright"),
    ])
    poll_until(client, lambda: client.stats["switches_other_domains"] == 1)

    stats = client.stats
    assert (stats["switches_applied"], stats["switches_repeated"], stats["records_invalid"]) == (2, 1, 0)
    assert [c.decision_id for c in applied] == ["d1", "d2"]
    choice = client.current(domain)
    assert choice == applied[-1]
    assert (choice.domain, choice.from_strategy, choice.strategy, choice.reason, choice.decision_id) == (
        domain, "api", "rss", "test d2", "d2")
    assert dict(choice.params) == switch(domain, "d2", "rss")["params"]
    assert (choice.timeout_ms, choice.retries, choice.explore_rate, choice.strategies) == (
        8000.0, 2, 0.05, tuple(STRATEGIES))
    assert client.strategy_for(domain) == "rss"
    assert client.current(MINE[1]) is None and client.strategy_for(MINE[1]) == "requests"
    with pytest.raises(ValueError, match="does not follow switches for domain 'other-"):
        client.strategy_for(foreign)


def test_a_client_started_after_the_switch_knows_it(
    settings: Settings, producer: KafkaProducer, clients: Callable[..., ScraperClient]
) -> None:
    produce_switches(producer, settings, [
        switch(MINE[0], "e1", "api"), switch(MINE[1], "e2", "playwright"), switch(MINE[0], "e3", "rss", frm="api"),
    ])
    client = clients()
    assert client.catch_up(timeout_s=15)
    assert client.strategy_for(MINE[0]) == "rss" and client.current(MINE[0]).decision_id == "e3"
    assert client.strategy_for(MINE[1]) == "playwright"
    everything = clients(None)  # domains=None follows every domain
    assert everything.catch_up(timeout_s=15)
    assert {d: everything.strategy_for(d) for d in MINE} == {MINE[0]: "rss", MINE[1]: "playwright"}


def test_the_background_thread_follows_switches(
    settings: Settings, producer: KafkaProducer, clients: Callable[..., ScraperClient]
) -> None:
    client = clients().start()
    produce_switches(producer, settings, [switch(MINE[1], "f1", "api")])
    deadline = time.monotonic() + 15
    while client.strategy_for(MINE[1]) != "api":
        assert time.monotonic() < deadline, client.stats
        time.sleep(0.05)


# -- (b) reporting attempts -------------------------------------------------------------------


def test_reported_attempts_arrive_as_envelopes_on_their_domains_partition(
    settings: Settings, clients: Callable[..., ScraperClient]
) -> None:
    client = clients(batch_size=50, linger_s=60.0, scraper_id="s-1")
    domains = [f"site-{n}.example" for n in range(6)]
    expected = []
    for n in range(120):
        doc = {"domain": domains[n % 6], "strategy": STRATEGIES[n % 4], "success": n % 3 != 0,
               "latency_ms": 100.0 + n, "event_id": f"att-{n}", "ts": 1_767_225_600.0 + n}
        if n % 3 == 0:
            doc |= {"error_type": "http_403", "http_status": 403, "items_found": 0}
        event_id = client.report(doc) if n % 2 else client.report(**doc)
        assert event_id == doc["event_id"]
        expected.append(validate_event({"type": "scrape_attempt", "scraper_id": "s-1", **doc}))
    before = time.time()
    filled_id = client.report(domain="site-0.example", strategy="api", success=True)
    after = time.time()
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", filled_id)  # a ULID
    assert client.flush() == 121

    records = read_topic(settings, "scrape-attempts", expect=1)
    # Batches of 50, 50 and 21 attempts, each at most one record per partition.
    assert len(records) <= 3 * settings.partitions
    events = decoded(settings, records)
    assert len(events) == 121
    filled = next(e for e in events if e.event_id == filled_id)
    assert before <= filled.ts <= after and filled.scraper_id == "s-1"
    got = sorted((e for e in events if e.event_id != filled_id), key=lambda e: int(e.event_id.split("-")[1]))
    assert got == expected
    # Each domain's attempts keep the order they were reported in.
    for domain in domains:
        ids = [e.event_id for e in events if e.domain == domain and e.event_id != filled_id]
        assert ids == [e.event_id for e in expected if e.domain == domain]
    assert client.stats["attempts_sent"] == 121 and client.stats["attempts_failed"] == 0


def test_lingering_attempts_are_sent_by_the_background_thread(
    settings: Settings, clients: Callable[..., ScraperClient]
) -> None:
    client = clients(linger_s=0.2).start()
    client.report(domain="site-3.example", strategy="rss", success=False, error_type="timeout", event_id="lone")
    events = decoded(settings, read_topic(settings, "scrape-attempts", expect=1, idle_s=0.5))
    assert [(e.event_id, e.domain, e.success, e.error_type) for e in events] == [
        ("lone", "site-3.example", False, "timeout")]


# -- (c) bad attempts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message", "errors"),
    [
        ({"latency_ms": -5.0}, "invalid scrape attempt: latency_ms: Input should be greater than or equal to 0",
         [{"field": "latency_ms", "reason": "Input should be greater than or equal to 0"}]),
        ({"success": "yes"}, "invalid scrape attempt: success: Input should be a valid boolean",
         [{"field": "success", "reason": "Input should be a valid boolean"}]),
        ({"type": "item"}, "invalid scrape attempt: unknown event type 'item'; expected one of scrape_attempt",
         [{"field": "type", "reason": "unknown event type 'item'; expected one of scrape_attempt"}]),
        ({"domain": None}, "invalid scrape attempt: domain: Input should be a valid string",
         [{"field": "domain", "reason": "Input should be a valid string"}]),
    ],
)
def test_a_bad_attempt_raises_and_sends_nothing(
    settings: Settings, clients: Callable[..., ScraperClient], fields: dict, message: str, errors: list
) -> None:
    client = clients(batch_size=1)  # a valid attempt would be sent at once
    good = {"domain": "site-1.example", "strategy": "api", "success": True, "latency_ms": 10.0}
    with pytest.raises(InvalidAttempt) as caught:
        client.report(good | fields)
    assert str(caught.value) == message
    assert caught.value.errors == errors
    assert client.flush() == 0
    assert client.stats["attempts_reported"] == 0
    assert read_topic(settings, "scrape-attempts", expect=0, idle_s=1.0) == []


# -- (d) exploration --------------------------------------------------------------------------


def test_exploration_follows_the_decided_rate_and_strategies(
    settings: Settings, producer: KafkaProducer, clients: Callable[..., ScraperClient]
) -> None:
    params_strategies = ["api", "rss", "playwright"]  # "requests" is known but not offered
    doc = switch(MINE[0], "x1", "api", explore_rate=0.1)
    doc["params"]["strategies"] = params_strategies
    produce_switches(producer, settings, [doc])
    first, second = clients(seed=42), clients(seed=42)
    assert first.catch_up(timeout_s=15) and second.catch_up(timeout_s=15)

    choices = [first.choose(MINE[0]) for _ in range(2_000)]
    explored = Counter(c for c in choices if c != "api")
    assert 0.08 <= sum(explored.values()) / 2_000 <= 0.12
    assert set(explored) == {"rss", "playwright"}
    assert abs(explored["rss"] - explored["playwright"]) <= 0.25 * sum(explored.values())
    assert [second.choose(MINE[0]) for _ in range(2_000)] == choices  # same seed, same draws
    assert first.strategy_for(MINE[0]) == "api"  # the decision itself never explores
    assert first.choose(MINE[1]) == "requests"  # no decision, nothing to explore


# -- the example scraper loop -----------------------------------------------------------------


def test_the_example_loop_reports_every_attempt(
    settings: Settings, producer: KafkaProducer, clients: Callable[..., ScraperClient]
) -> None:
    web = SimulatedWeb(seed=3, n_domains=4, break_per_attempt=0.01, recover_per_attempt=0.05)
    produce_switches(producer, settings, [switch(web.domains[0], "w1", "rss", explore_rate=0.2)])
    client = clients(web.domains, batch_size=64)
    assert client.catch_up(timeout_s=15)
    stats = run(client, web, rate=0, limit=300)
    client.flush()
    assert stats.attempts == 300 and 0 < stats.successes < 300 and stats.explored > 0
    events = decoded(settings, read_topic(settings, "scrape-attempts", expect=1))
    assert len(events) == 300
    assert Counter(e.domain for e in events).keys() == set(web.domains)
    assert sum(e.success for e in events) == stats.successes
    used = Counter(e.strategy for e in events if e.domain == web.domains[0])
    assert used.most_common(1)[0][0] == "rss"
