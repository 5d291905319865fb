"""Bids end to end: scored on arrival, learned from an outcome 1,000 events later with the
stored features, expired and unknown outcomes dead-lettered, drafts scored by the API."""

from __future__ import annotations

import httpx
import orjson

from tests.conftest import Stack, post_events, until

T0 = 1_700_000_000.0
DAY = 86400.0


def bid(bid_id: str, ts: float, *, word: str = "python", profile: str = "p1", amount: float = 90.0) -> dict:
    return {"type": "bid", "bid_id": bid_id, "profile_id": profile, "job_id": f"job-{bid_id}", "ts": ts,
            "job_title": f"{word} work", "job_text": f"Skills: {word}, sql.", "job_budget": 100.0,
            "amount": amount, "bid_text": "I can start today and keep you posted.",
            "profile": {"skills": [word, "figma"], "experience": 3.0}}


def snapshot(stack: Stack) -> dict:
    """The worker's published bid model ({} until its first publication)."""
    raws = stack.redis.hvals(stack.keys.bid_models)
    assert len(raws) <= 1
    return orjson.loads(raws[0]) if raws else {}


def test_bid_scored_on_arrival_learned_from_its_outcome_days_later(stack: Stack) -> None:
    stack.extra_env = {"bid_expiry_s": 10 * DAY}
    stack.start_worker()
    api = stack.start_api()
    post_events(api, [bid("b-rare", T0, word="zebracorn")])
    stack.wait_applied("bids", 1)
    placed = httpx.get(f"{api}/api/bids/b-rare").json()
    assert placed["status"] == "pending" and placed["outcome"] is None
    assert 0.0 < placed["score"] < 1.0 and placed["model_version"] == "v1.0"
    assert placed["expires_at"] == T0 + 10 * DAY
    stored = orjson.loads(stack.redis.hget(stack.keys.bid("b-rare"), "features"))
    assert stored["job:zebracorn"] > 0 and stored["match:zebracorn"] == 1.0

    # 1,000 other events (bids and their outcomes) before the outcome arrives.
    others = [bid(f"o{i}", T0 + 60 * i, profile=f"p{i % 7}", amount=60.0 + i % 80) for i in range(500)]
    others += [{"type": "bid_outcome", "bid_id": f"o{i}", "won": i % 3 == 0, "ts": T0 + DAY + 60 * i} for i in range(500)]
    for first in range(0, 1000, 250):
        post_events(api, others[first : first + 250])
    stack.wait_applied("bids", 1001)
    before = until(lambda: (s := snapshot(stack)).get("learned") == 500 and s)
    assert "match:zebracorn" not in before["weights"]  # no outcome has carried that feature yet

    post_events(api, [{"type": "bid_outcome", "bid_id": "b-rare", "won": True, "ts": T0 + 3 * DAY}])
    stack.wait_applied("bids", 1002)
    after = until(lambda: (s := snapshot(stack)).get("learned") == 501 and s)
    # Only the stored features carry this word: the weights moved for them.
    assert after["weights"]["match:zebracorn"] > 0 and after["weights"]["job:zebracorn"] > 0
    landed = httpx.get(f"{api}/api/bids/b-rare").json()
    assert landed["status"] == "won" and landed["outcome"] == {"won": True, "at": T0 + 3 * DAY, "delay_s": 3 * DAY}
    assert stack.redis.zscore(stack.keys.bids_pending, "b-rare") is None

    quality = httpx.get(f"{api}/api/models/bids").json()
    (worker,) = quality["workers"].values()
    assert quality["learned"] == 501 and quality["pending"] == 0
    assert worker["model_scores"]["outcomes"] == 501 and worker["baseline_scores"]["outcomes"] == 501
    assert set(worker["model_scores"]["cumulative"]) == {"roc_auc", "log_loss", "precision", "recall", "f1", "confusion"}
    assert len(worker["top_weights"]) == 15
    # The recommender's figures share the models hash: its endpoint reads only its own.
    recommender = httpx.get(f"{api}/api/models/recommender")
    assert recommender.status_code == 200 and recommender.json()["workers"] == 0  # no interactions yet


def test_expired_and_unknown_outcomes_are_dead_lettered(stack: Stack) -> None:
    stack.extra_env = {"bid_expiry_s": 3600}
    stack.start_worker()
    api = stack.start_api()
    post_events(api, [bid("old", T0), bid("later", T0 + 2 * 3600)])  # the later bid moves the clock past old's expiry
    stack.wait_applied("bids", 2)
    assert until(lambda: httpx.get(f"{api}/api/bids/old").json()["status"] == "expired")
    post_events(api, [{"type": "bid_outcome", "bid_id": "old", "won": True, "ts": T0 + 3 * 3600},
               {"type": "bid_outcome", "bid_id": "ghost", "won": False, "ts": T0 + 3 * 3600},
               {"type": "bid_outcome", "bid_id": "later", "won": False, "ts": T0 + 3 * 3600}])
    stack.wait_applied("bids", 3)
    letters = [orjson.loads(r.value) for r in stack.consume_all("dead-letters", expect=2)]
    assert sorted(d["reason"] for d in letters) == [
        "outcome for bid 'old' that expired at 1700003600: no outcome within 3600 s of its placement",
        "outcome for unknown bid 'ghost'",
    ]
    assert all(orjson.loads(d["raw_preview"])["type"] == "bid_outcome" for d in letters)
    assert httpx.get(f"{api}/api/bids/later").json()["status"] == "lost"
    assert httpx.get(f"{api}/api/models/bids").json()["expired"] == 1


def test_draft_bids_are_scored_without_being_recorded(stack: Stack) -> None:
    stack.start_worker()
    api = stack.start_api()
    post_events(api, [bid("b1", T0)])
    stack.wait_applied("bids", 1)
    draft = {k: v for k, v in bid("draft-1", T0 + 60).items() if k not in ("type", "bid_id")}
    resp = httpx.post(f"{api}/api/bids/score", json=draft)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert 0.0 < body["probability"] < 1.0 and body["baseline"] == 1 / 3
    assert body["model_version"] == "v1.0"
    resp = httpx.post(f"{api}/api/bids/score", json={**draft, "amount": -5})
    assert resp.status_code == 422 and resp.json()["detail"][0]["field"] == "amount"
    assert httpx.get(f"{api}/api/bids/draft").status_code == 404
    assert stack.redis.zcard(stack.keys.bids_pending) == 1
