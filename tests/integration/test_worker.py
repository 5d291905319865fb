"""The worker through the real broker and Redis: poison input, redelivery, crashes."""

from __future__ import annotations

import base64
import os
import signal
import time
from collections import Counter

import orjson
import pytest

from tests.conftest import Stack, until, wait_caught_up

pytestmark = pytest.mark.integration


def interaction(n: int, user: str, action: str = "click") -> dict:
    return {"type": "interaction", "event_id": f"e{n}", "ts": 1_700_000_000 + n,
            "user_id": user, "item_id": f"item{n % 50}", "action": action}


def malformed(n: int, max_bytes: int) -> tuple[bytes, str]:
    """One of five kinds of bad record, with the words its dead letter's reason must contain."""
    kind = n % 5
    if kind == 0:
        return b"{not json" + str(n).encode(), "not valid JSON"
    if kind == 1:
        return orjson.dumps({"type": "interaction", "event_id": f"bad{n}", "item_id": "x", "action": "click"}), "user_id: Field required"
    if kind == 2:
        return orjson.dumps({"type": "interaction", "event_id": f"bad{n}", "user_id": "u", "item_id": "x", "action": "click", "position": "3"}), "position: Input should be a valid integer"
    if kind == 3:
        return orjson.dumps({"type": "teleport", "event_id": f"bad{n}"}), "unknown event type 'teleport'"
    big = {"type": "interaction", "event_id": f"bad{n}", "user_id": "u", "item_id": "x", "action": "click", "pad": "x" * max_bytes}
    return orjson.dumps(big), "over the limit"


def test_poison_records_are_dead_lettered_and_the_rest_applied(stack: Stack) -> None:
    stack.start_worker()
    users = [f"u{n % 97}" for n in range(10_000)]
    values, keys, expected_reasons = [], [], []
    valid_per_user: Counter[str] = Counter()
    for n in range(10_000):
        if n % 100 == 37:  # 100 malformed records spread through the stream
            raw, reason = malformed(n // 100, stack.settings.max_event_bytes)
            values.append(raw)
            expected_reasons.append(reason)
        else:
            values.append(orjson.dumps(interaction(n, users[n])))
            valid_per_user[users[n]] += 1
        keys.append(users[n].encode())
    stack.produce("interactions", values, keys)

    stack.wait_applied("interactions", 9_900, timeout_s=120)
    letters = stack.consume_all("dead-letters", expect=100)
    assert len(letters) == 100
    docs = [orjson.loads(rec.value) for rec in letters]
    assert Counter(d["source"]["topic"] for d in docs) == {stack.topic("interactions"): 100}
    for reason in set(expected_reasons):
        assert sum(reason in d["reason"] for d in docs) == 20, reason
    # The raw bytes travel with the letter, and its offset points back at the record.
    by_offset = {(d["source"]["partition"], d["source"]["offset"]): d for d in docs}
    assert len(by_offset) == 100
    assert all(base64.b64decode(d["raw_base64"]) in values for d in docs)
    # Every valid event had its effect, per user, exactly once.
    for user, count in valid_per_user.items():
        assert int(stack.redis.hget(stack.keys.user_counts(user), "click")) == count
    assert stack.applied("interactions") == 9_900
    assert stack.children.alive() == {"worker": True}


def test_wrong_topic_is_dead_lettered(stack: Stack) -> None:
    stack.start_worker()
    stack.produce("items", [orjson.dumps(interaction(1, "u1")), orjson.dumps({"type": "item", "item_id": "ok"})])
    stack.wait_applied("items", 1)
    (letter,) = stack.consume_all("dead-letters", expect=1)
    assert orjson.loads(letter.value)["reason"] == (
        f"event type 'interaction' does not belong on topic '{stack.topic('items')}'"
    )


def mixed_events(n: int) -> list[tuple[str, dict]]:
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            out.append(("items", {"type": "item", "event_id": f"it{i}", "item_id": f"item{i % 40}", "title": f"T{i}", "category": "c", "tags": ["a"]}))
        elif kind == 1:
            out.append(("scrape-attempts", {"type": "scrape_attempt", "event_id": f"sa{i}", "domain": f"d{i % 3}.org", "strategy": "rss", "success": i % 7 != 0, "latency_ms": 12.5}))
        elif kind == 2:
            out.append(("bids", {"type": "bid", "event_id": f"b{i}", "bid_id": f"bid{i}", "profile_id": "p1", "amount": 100.0}))
        elif kind == 3:
            out.append(("bids", {"type": "bid_outcome", "event_id": f"bo{i}", "bid_id": f"bid{i - 1}", "won": True}))
        else:
            out.append(("interactions", interaction(i, f"u{i % 11}", "like")))
    return out


def produce_mixed(stack: Stack, events: list[tuple[str, dict]]) -> None:
    from schemas.events import validate_event
    from schemas.topics import key_of

    futures = [
        stack.producer.send(stack.topic(topic), key=key_of(validate_event(doc)), value=orjson.dumps(doc))
        for topic, doc in events
    ]
    stack.producer.flush()
    stack.track(futures)


TOPICS = ["items", "interactions", "scrape-attempts", "bids"]


def state(stack: Stack) -> dict:
    dump = stack.dump()
    dump.pop(stack.keys.workers)  # which processes ran, not what the events did
    for per_process in (stack.keys.models, stack.keys.registry, stack.keys.bid_models):
        dump.pop(per_process, None)  # each worker's own figures, one field per process
    for key, value in dump.items():
        if key.startswith(stack.keys.prefix + "recs:"):
            # A worker that rebuilds its model from the log (a new group) writes the same
            # lists again: same items, scores and reasons, a later computed_at, and in
            # `reflects` the user's events of the batch that computed it (batches differ).
            doc = orjson.loads(value)
            doc.pop("computed_at")
            # (mixed_events: interaction e{i} is user u{i % 11}'s.)
            assert all(f"u{int(i[1:]) % 11}" == doc["user_id"] for i in doc.pop("reflects"))
            dump[key] = doc
    return dump


def cold_start_computed(stack: Stack) -> None:
    """Wait until every recommender worker has computed the cold-start list since the last
    events it learned (the list itself is rewritten only when its items change)."""
    def done() -> bool:
        entries = [orjson.loads(v) for k, v in stack.redis.hgetall(stack.keys.registry).items()
                   if k.startswith(b"recommender:")]
        return bool(entries) and not any(e["cold_start_pending"] for e in entries)
    until(done)


def apply_once(stack: Stack, events: list[tuple[str, dict]]) -> dict:
    """Run a worker over the events until they are all applied; the resulting state."""
    stack.start_worker()
    produce_mixed(stack, events)
    for topic in TOPICS:
        stack.wait_applied(topic, sum(t == topic for t, _ in events))
    wait_caught_up(stack, TOPICS)
    cold_start_computed(stack)
    once = state(stack)
    assert len(once) > 100
    return once


def test_same_events_delivered_twice_leave_redis_as_once(stack: Stack) -> None:
    events = mixed_events(1_000)
    once = apply_once(stack, events)

    produce_mixed(stack, events)  # a producer retry: same event_ids, new offsets
    wait_caught_up(stack, TOPICS)
    cold_start_computed(stack)
    assert state(stack) == once


def test_replay_of_the_whole_log_by_a_new_group_changes_nothing(stack: Stack) -> None:
    once = apply_once(stack, mixed_events(1_000))
    stack.children.stop()

    # A second consumer group reads every record again from offset 0: full redelivery.
    stack.settings = stack.settings.model_copy(update={"consumer_group": stack.settings.consumer_group + "-again"})
    stack.start_worker("worker-again")
    wait_caught_up(stack, TOPICS)
    cold_start_computed(stack)
    assert state(stack) == once


def test_kill_9_mid_stream_loses_nothing_and_doubles_nothing(stack: Stack) -> None:
    stack.start_worker()
    values = [orjson.dumps(interaction(n, f"u{n % 13}")) for n in range(20_000)]
    keys = [f"u{n % 13}".encode() for n in range(20_000)]
    stack.produce("interactions", values, keys)
    deadline = time.monotonic() + 60
    while stack.applied("interactions") < 3_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    (_, proc), = stack.children.procs
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stack.children.procs.clear()
    assert stack.applied("interactions") < 20_000  # killed mid-stream
    stack.start_worker("worker-restarted")
    stack.wait_applied("interactions", 20_000, timeout_s=120)
    wait_caught_up(stack, ["interactions"])
    total = sum(int(stack.redis.hget(stack.keys.user_counts(f"u{u}"), "click")) for u in range(13))
    assert total == 20_000
    assert stack.applied("interactions") == 20_000


def test_a_crashing_agent_stops_the_worker(stack: Stack) -> None:
    # A Redis that answers but refuses writes (wrong type at a key the agent writes) makes
    # the agent raise; CrashingSupervisor must bring the whole worker down, not hang.
    stack.redis.set(stack.keys.user_counts("victim"), "not a hash")
    stack.start_worker()
    stack.produce("interactions", [orjson.dumps(interaction(1, "victim"))], [b"victim"])
    (_, proc), = stack.children.procs
    assert proc.wait(timeout=60) != 0


def test_envelopes_are_applied_event_by_event_and_bad_ones_dead_lettered(stack: Stack) -> None:
    from schemas.envelope import pack

    stack.start_worker()
    docs = [orjson.dumps(interaction(n, f"u{n % 5}")) for n in range(5_000)]
    docs[17] = orjson.dumps({"type": "interaction", "event_id": "bad", "user_id": "u2", "item_id": "x", "action": "nap"})
    records = pack([(f"u{n % 5}".encode(), d) for n, d in enumerate(docs)], list(range(stack.settings.partitions)))
    futures = [stack.producer.send(stack.topic("interactions"), value=v, partition=p) for p, v in records]
    stack.producer.flush()
    stack.track(futures)
    stack.wait_applied("interactions", 4_999)
    (letter,) = stack.consume_all("dead-letters", expect=1)
    doc = orjson.loads(letter.value)
    assert doc["reason"].startswith("envelope event ") and "action:" in doc["reason"]
    assert orjson.loads(base64.b64decode(doc["raw_base64"]))["event_id"] == "bad"
    assert "index" in doc["source"]
    assert sum(int(stack.redis.hget(stack.keys.user_counts(f"u{u}"), "click")) for u in range(5)) == 4_999
