"""The bid model: features, delayed labels, expiry, and quality on the simulator beside
the ground truth and the profile-win-rate baseline (through the worker's own service code)."""

from __future__ import annotations

import pickle

import orjson
import pytest

from deploy.simulator import SimConfig, Simulator
from online_models.bids import DAY, BidFeaturizer, BidScores, ProfileHistory, WinModel
from schemas.events import validate_event
from schemas.keys import Keys
from schemas.settings import Settings
from streams.bids import BidService
from streams.coalesce import Coalescer
from streams.pipeline import Rejected

K = Keys("t:")
BID = {"type": "bid", "bid_id": "b1", "profile_id": "p1", "job_id": "j1", "job_title": "Logo design",
       "job_text": "Skills: figma, branding.", "job_budget": 200.0, "amount": 180.0,
       "bid_text": "I can start today.", "profile": {"skills": ["figma", "python"], "experience": 2.0}}


def test_features_from_job_bid_profile_and_history() -> None:
    f = BidFeaturizer()
    f.skills.update({"branding", "figma", "python"})
    x = f.learn_bid(BID, ts=1000.0)
    assert (x["skill_coverage"], x["skill_overlap"], x["no_budget"]) == (0.5, 1.0, 0.0)
    assert x["amount_vs_budget"] == pytest.approx(-0.10536, abs=1e-5)
    assert x["match:figma"] == 1.0 and "match:python" not in x
    assert x["profile_win_rate"] == pytest.approx(1 / 3) and x["profile_bids_30d"] == 0.0
    assert x["effort"] == pytest.approx(4 / 80)
    # The second bid on the job sees the first one's amount, and the profile's history.
    f.learn_outcome("p1", True, ts=1000.0 + DAY)
    y = f.learn_bid(dict(BID, bid_id="b2", amount=360.0), ts=1000.0 + 2 * DAY)
    assert y["other_bids"] == pytest.approx(0.693147, abs=1e-6)
    assert y["amount_vs_other_bids"] == pytest.approx(0.693147, abs=1e-6)
    assert y["profile_win_rate"] == pytest.approx(2 / 4) and y["profile_outcomes"] == pytest.approx(0.693147, abs=1e-6)


def test_profile_windows_are_by_event_time() -> None:
    h = ProfileHistory()
    for ts, won in [(0.0, True), (10 * DAY, False), (40 * DAY, True)]:
        h.add_outcome(ts, won)
        h.add_bid(ts)
    assert h.win_rate(41 * DAY) == (3, 3 / 6)
    assert h.win_rate(41 * DAY, window=30 * DAY) == (1, 2 / 4)
    assert h.win_rate(41 * DAY, last=2) == (2, 2 / 5)
    assert h.bid_count(41 * DAY, 7 * DAY) == 1
    assert ProfileHistory.from_state(orjson.loads(orjson.dumps(h.to_state()))).to_state() == h.to_state()


def test_reads_do_not_change_the_featurizer_or_model_and_both_pickle() -> None:
    f, m = BidFeaturizer(), WinModel()
    x = f.learn_bid(BID, ts=0.0)
    m.learn_one(x, True)
    before = (pickle.dumps(f), m.snapshot())
    f.features(dict(BID, profile_id="p9", job_id="j9"), ts=5.0)
    m.predict_one(x)
    assert (pickle.dumps(f), m.snapshot()) == before
    again = pickle.loads(pickle.dumps(m))
    assert again.predict_one(x) == m.predict_one(x) == WinModel.score_with(m.snapshot(), x)


def service(**overrides: object) -> BidService:
    return BidService(Settings(**overrides))


def test_outcomes_learn_the_stored_features_and_unknown_or_expired_ones_are_rejected() -> None:
    svc = service(bid_expiry_s=3 * DAY)
    fx = Coalescer()
    svc.learn(fx, validate_event({**BID, "ts": 0.0}), K, "0:0:0")
    stored = svc.pending["b1"]["x"]
    # The profile's history moves on before the outcome: the model must still learn from
    # the features the bid was scored with, not from features computed now.
    svc.learn(fx, validate_event({**BID, "bid_id": "b2", "ts": DAY}), K, "0:0:0")
    learned = []
    svc.model.learn_one = lambda x, won: learned.append((x, won))  # type: ignore[method-assign]
    svc.learn(fx, validate_event({"type": "bid_outcome", "bid_id": "b1", "won": True, "ts": 2 * DAY}), K, "0:0:0")
    assert learned == [(stored, True)]
    with pytest.raises(Rejected, match="bid 'b1' already has an outcome"):
        svc.learn(fx, validate_event({"type": "bid_outcome", "bid_id": "b1", "won": False, "ts": 2 * DAY}), K, "0:0:0")
    with pytest.raises(Rejected, match="outcome for unknown bid 'nope'"):
        svc.learn(fx, validate_event({"type": "bid_outcome", "bid_id": "nope", "won": False, "ts": 2 * DAY}), K, "0:0:0")
    svc.learn(fx, validate_event({**BID, "bid_id": "b3", "ts": 5 * DAY}), K, "0:0:0")
    assert svc.expire(fx, K) == 1 and list(svc.pending) == ["b3"]
    with pytest.raises(Rejected, match=r"outcome for bid 'b2' that expired at 345600: no outcome within 259200 s"):
        svc.learn(fx, validate_event({"type": "bid_outcome", "bid_id": "b2", "won": True, "ts": 6 * DAY}), K, "0:0:0")
    commands = fx.commands()
    assert ("ZREM", "t:bids:pending", "b1") in commands or ("ZREM", "t:bids:pending", "b1", "b2") in commands
    assert ("EXPIRE", "t:bid:b2", Settings().bid_retention_s) in commands


def test_pending_bids_are_bounded_by_the_expiry() -> None:
    svc = service(bid_expiry_s=DAY)
    fx = Coalescer()
    for i in range(3000):  # one bid a minute for two days, no outcomes at all
        svc.learn(fx, validate_event({**BID, "bid_id": f"b{i}", "ts": 60.0 * i}), K, "0:0:0")
        svc.expire(fx, K)
    # What is left is exactly the last day: 1,440 minutes and the bid at the cutoff.
    assert len(svc.pending) == 24 * 60 + 1 and svc.expired == 3000 - 24 * 60 - 1
    assert min(e["ts"] for e in svc.pending.values()) == 60.0 * 2999 - DAY


def test_scores_report_the_confusion_matrix_and_rates() -> None:
    s = BidScores(window=2)
    for y, p in [(True, 0.9), (False, 0.8), (True, 0.3), (False, 0.1)]:
        s.update(y, p)
    report = s.report()
    assert report["cumulative"]["confusion"] == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}
    assert (report["cumulative"]["precision"], report["cumulative"]["recall"]) == (0.5, 0.5)
    assert report["rolling"]["confusion"] == {"tp": 0, "fp": 0, "tn": 1, "fn": 1}


def test_on_the_simulator_the_model_nears_the_ground_truth_and_beats_the_baseline() -> None:
    """20,000 outcomes through the worker's own BidService; the hidden truth scores the same bids."""
    sim = Simulator(SimConfig(seed=3, weight_interaction=0.0, weight_item=0.0, weight_scrape=0.0, weight_bid=1.0))
    svc = service(bid_metrics_window=5000)
    truth = BidScores(window=5000)
    true_p = {}
    fx = Coalescer()
    for doc in sim.events():
        if doc["type"] == "bid":
            true_p[doc["bid_id"]] = sim.true_win_probability(doc)
        svc.learn(fx, validate_event(doc), K, "0:0:0")
        if doc["type"] == "bid_outcome":
            truth.update(doc["won"], true_p.pop(doc["bid_id"]))
            if svc.scores.n == 20_000:
                break
    model, base, best = svc.scores.report(), svc.baseline_scores.report(), truth.report()
    print({name: (r["rolling"]["roc_auc"], r["cumulative"]["roc_auc"], r["rolling"]["log_loss"])
           for name, r in (("model", model), ("baseline", base), ("truth", best))})
    # The last 5,000 outcomes: what the model is worth after learning from 15,000.
    assert best["rolling"]["roc_auc"] - model["rolling"]["roc_auc"] <= 0.03
    assert model["rolling"]["roc_auc"] > base["rolling"]["roc_auc"] + 0.1
    assert model["cumulative"]["roc_auc"] > base["cumulative"]["roc_auc"]
    assert model["rolling"]["log_loss"] < base["rolling"]["log_loss"]


def test_an_old_bid_arriving_after_newer_ones_still_expires() -> None:
    # Partitions interleave: arrival order is not placement order.
    svc = service(bid_expiry_s=3600)
    fx = Coalescer()
    svc.learn(fx, validate_event({**BID, "bid_id": "new", "ts": 10_000.0}), K, "0:0:0")
    svc.learn(fx, validate_event({**BID, "bid_id": "old", "ts": 1_000.0}), K, "0:0:0")
    assert svc.expire(fx, K) == 1 and list(svc.pending) == ["new"]
