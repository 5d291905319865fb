"""Decoding batches and the Redis writes each event queues (against a spec'd fake pipeline)."""

from __future__ import annotations

from dataclasses import dataclass
from unittest.mock import call, create_autospec

import orjson

from schemas.events import validate_event
from schemas.keys import Keys
from streams.coalesce import Coalescer
from streams.interactions import apply_user_event, polarity
from streams.items import apply_item
from streams.pipeline import decode_batch

K = Keys("t:")


@dataclass
class Rec:
    value: bytes | None
    offset: int = 0
    topic: str = "interactions"
    partition: int = 2
    key: bytes | None = b"k"
    timestamp: float = 1_700_000_000.0


def test_decode_batch_fills_ids_and_separates_dead_letters() -> None:
    recs = [
        Rec(orjson.dumps({"type": "interaction", "user_id": "u", "item_id": "i", "action": "click"}), offset=5),
        Rec(b"{", offset=6),
        Rec(orjson.dumps({"type": "item", "item_id": "i"}), offset=7),
        Rec(orjson.dumps({"type": "interaction", "event_id": "x", "ts": 5, "user_id": "u", "item_id": "i", "action": "like"}), offset=8),
    ]
    out = decode_batch(recs, allowed_types=frozenset({"interaction"}), max_bytes=1000)
    assert [(e.event_id, e.ts) for e, _ in out.events] == [("interactions:2:5", 1_700_000_000.0), ("x", 5.0)]
    assert [(d.offset, d.reason.split(":")[0]) for d in out.dead] == [(6, "not valid JSON"), (7, "event type 'item' does not belong on topic 'interactions'")]
    letter = orjson.loads(out.dead[0].encode())
    assert letter["source"] == {"topic": "interactions", "partition": 2, "offset": 6}
    assert letter["raw_base64"] == "ew==" and letter["key"] == "k"



def test_an_envelope_of_more_events_than_allowed_dead_letters_the_excess_with_the_reason() -> None:
    """Events are numbered by offset and index in their record (streams/recommend.py), so no
    record may hold more than MAX_ENVELOPE_EVENTS."""
    from schemas.envelope import ENVELOPE_FIELD, MAX_ENVELOPE_EVENTS

    docs = [{"type": "interaction", "event_id": f"e{n}", "ts": 5, "user_id": "u", "item_id": "i", "action": "like"}
            for n in range(MAX_ENVELOPE_EVENTS + 2)]
    out = decode_batch([Rec(orjson.dumps({ENVELOPE_FIELD: docs}))], allowed_types=frozenset({"interaction"}),
                       max_bytes=10_000_000)
    assert [e.event_id for e, _ in out.events] == [f"e{n}" for n in range(MAX_ENVELOPE_EVENTS)]
    assert [(d.index, d.reason) for d in out.dead] == [
        (n, f"envelope event {n}: an envelope holds at most {MAX_ENVELOPE_EVENTS} events")
        for n in (MAX_ENVELOPE_EVENTS, MAX_ENVELOPE_EVENTS + 1)]
    assert orjson.loads(out.dead[0].raw)["event_id"] == f"e{MAX_ENVELOPE_EVENTS}"


def test_an_event_further_ahead_of_its_records_time_than_the_skew_is_dead_lettered() -> None:
    def like(n: int, ts: float) -> bytes:
        return orjson.dumps({"type": "interaction", "event_id": f"e{n}", "ts": ts, "user_id": "u", "item_id": "i",
                             "action": "like"})

    recs = [Rec(like(0, 1_700_000_299.0), offset=0), Rec(like(1, 32503679999.0), offset=1),
            Rec(like(2, 1_700_000_301.0), offset=2)]  # records written at 1_700_000_000 (Rec's default)
    out = decode_batch(recs, allowed_types=frozenset({"interaction"}), max_bytes=1000, max_skew_s=300.0)
    assert [e.event_id for e, _ in out.events] == ["e0"]
    assert [(d.offset, d.errors[0]["field"]) for d in out.dead] == [(1, "ts"), (2, "ts")]
    assert out.dead[0].reason.startswith("ts 32503679999 is 30,803,679,999 s ahead of the receiving clock")
    # The record's time decides, not the reader's: a replay years later decides the same.
    assert decode_batch(recs, allowed_types=frozenset({"interaction"}), max_bytes=1000).dead == []

def fake_pipe() -> Coalescer:
    return create_autospec(Coalescer, instance=True, spec_set=True)


def test_interaction_effects() -> None:
    pipe = fake_pipe()
    apply_user_event(pipe, validate_event({"type": "interaction", "ts": 9, "user_id": "u", "item_id": "i", "action": "rate", "value": 5}), K)
    assert pipe.mock_calls == [
        call.hincrby("t:usercounts:u", "rate", 1), call.hset("t:usercounts:u", "last_ts", 9.0),
        call.hincrby("t:itemstats:i", "rate", 1), call.zincrby("t:popular", 1, "i"),
    ]


def test_polarity() -> None:
    def p(action: str, value: float | None = None) -> int:
        return polarity(validate_event({"type": "interaction", "user_id": "u", "item_id": "i", "action": action, "value": value}))
    assert [p("click"), p("like"), p("save"), p("view"), p("impression"), p("dislike"), p("hide")] == [1, 1, 1, 1, 0, -1, -1]
    assert [p("rate", 4), p("rate", 3), p("rate", 2)] == [1, 0, -1]


def test_forget_me_deletes_the_users_keys() -> None:
    pipe = fake_pipe()
    apply_user_event(pipe, validate_event({"type": "user_deleted", "user_id": "u"}), K)
    assert pipe.mock_calls == [call.delete("t:usercounts:u", "t:profile:u", "t:recs:u")]


def test_retracted_item_leaves_catalogue_and_popular() -> None:
    pipe = fake_pipe()
    apply_item(pipe, validate_event({"type": "item", "event_id": "e", "ts": 1, "item_id": "i", "retracted": True}), K)
    doc = b'{"event_id":"e","ts":1.0,"type":"item","item_id":"i","tags":[],"retracted":true,"attributes":{}}'
    assert pipe.mock_calls == [
        call.xadd("t:catalogue", {"item": doc}, maxlen=200_000),
        call.delete("t:item:i"),
        call.zrem("t:popular", "i"),
    ]
