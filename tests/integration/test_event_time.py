"""Trustworthy time (issue 18, item 1): one event from the future must not move any model's
clock. The API answers it 422 naming ``ts``; a producer writing to Kafka directly gets it
dead-lettered with the reason; nothing else is lost."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from tests.conftest import Stack, post_events, until
from tests.integration.test_bids import bid

pytestmark = pytest.mark.integration

YEAR_3000 = 32503679999.0


def like(n: int, user: str, item: str, ts: float) -> dict:
    return {"type": "interaction", "event_id": f"like-{n}", "user_id": user, "item_id": item, "action": "like",
            "ts": ts}


def test_the_api_refuses_an_event_from_the_future_naming_ts(stack: Stack) -> None:
    api = stack.start_api()
    now = time.time()
    resp = httpx.post(api + "/api/events", json=[like(1, "ann", "i1", now), bid("b1", YEAR_3000)])
    assert resp.status_code == 422
    (error,) = resp.json()["detail"]
    assert error["index"] == 1 and error["field"] == "ts"
    assert "ahead of the receiving clock" in error["reason"] and "EDDY_MAX_CLOCK_SKEW_S" in error["reason"]
    # Within the allowed skew (300 s by default) is fine: clocks are never quite in step.
    assert httpx.post(api + "/api/events", json=[like(2, "ann", "i1", now + 60)]).status_code == 202


def test_an_event_from_the_future_written_to_kafka_is_dead_lettered_and_changes_nothing(stack: Stack) -> None:
    stack.extra_env = {"bid_expiry_s": 7 * 86400}
    stack.start_worker()
    api = stack.start_api()
    now = time.time()
    items = [{"type": "item", "event_id": f"item-{n}", "item_id": f"i{n}", "category": "music" if n % 2 else "film",
              "ts": now - 3600} for n in range(10)]
    post_events(api, items)
    stack.wait_applied("items", len(items))
    post_events(api, [like(1, "ann", "i1", now - 60), bid("b-pending", now - 60)])
    stack.wait_applied("interactions", 1)
    stack.wait_applied("bids", 1)

    def ann_list() -> list:
        raw = stack.redis.get(stack.keys.recs("ann"))
        return [(i["item_id"], i["score"], i["reason"]) for i in orjson.loads(raw)["items"]] if raw else []

    before = until(ann_list)
    # Straight into Kafka, past the API: another user's like and a bid, both in the year 3000.
    stack.produce("interactions", [orjson.dumps(like(2, "bob", "i3", YEAR_3000))], [b"bob"])
    stack.produce("bids", [orjson.dumps(bid("b-future", YEAR_3000))], [b"b-future"])
    letters = [orjson.loads(r.value) for r in stack.consume_all("dead-letters", expect=2)]
    assert sorted(d["errors"][0]["field"] for d in letters) == ["ts", "ts"]
    assert all("ahead of the receiving clock" in d["reason"] for d in letters)

    # The models' clocks did not move: ann's list is what it was, the pending bid still pending,
    # and its outcome is learned, not dead-lettered as expired.
    post_events(api, [like(3, "ann", "i5", now - 30), {"type": "bid_outcome", "bid_id": "b-pending", "won": True,
                                                        "ts": now - 20}])
    stack.wait_applied("interactions", 2)
    stack.wait_applied("bids", 2)
    after = until(lambda: (got := ann_list()) != before and got)
    assert after[0][1] > 0.5 and after[0][2] != "trending", after  # personal scores, not zeroed
    assert httpx.get(f"{api}/api/bids/b-pending").json()["status"] == "won"
    assert len(stack.consume_all("dead-letters", expect=2)) == 2  # nothing else was refused
