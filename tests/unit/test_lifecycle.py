"""Champion and challengers in the worker's recommender service, in process: automatic
promotion on a stream whose taste shifts, rollback to exact predictions, snapshots."""

from __future__ import annotations

import time

import random

import orjson
import pytest

from online_models.lifecycle import Decision, Policy, Window, decide
from schemas.events import validate_event
from schemas.keys import Keys
from schemas.settings import Settings
from streams.coalesce import Coalescer
from streams.recommend import RecommenderService
from streams.snapshots import SnapshotStore

CATEGORIES = ("painting", "music", "film", "jobs")
KEYS = Keys("t:")


def shifting_stream(seed: int = 1, n: int = 12_000, shift: bool = True) -> tuple[list[dict], list[dict]]:
    """Everyone likes one category, then, halfway, another: a taste shift."""
    rng = random.Random(seed)
    items = [{"type": "item", "event_id": f"i{j}", "ts": float(j), "item_id": f"it{j}",
              "title": f"thing {j}", "category": CATEGORIES[j % 4], "tags": [CATEGORIES[j % 4]]}
             for j in range(200)]
    by_cat = {c: [i["item_id"] for i in items if i["category"] == c] for c in CATEGORIES}
    before = {f"u{u}": CATEGORIES[rng.randrange(4)] for u in range(150)}
    after = {u: CATEGORIES[(CATEGORIES.index(c) + 1 + rng.randrange(3)) % 4] for u, c in before.items()}
    after = after if shift else before
    events = []
    for i in range(n):
        user = f"u{rng.randrange(150)}"
        taste = before if i < n // 2 else after
        cat = taste[user] if rng.random() < 0.9 else CATEGORIES[rng.randrange(4)]
        events.append({"type": "interaction", "event_id": f"e{i}", "ts": 1_000.0 + i * 60.0, "user_id": user,
                       "item_id": rng.choice(by_cat[cat]), "action": "click"})
    return items, events


def run(settings: Settings, items: list[dict], events: list[dict], changes: list | None = None) -> RecommenderService:
    service = RecommenderService(settings)
    for item in items:
        service.learn_catalogue_entry(orjson.dumps(item))
    for offset, raw in enumerate(events):
        serving = service.serving
        service.learn(Coalescer(), validate_event(dict(raw)), KEYS, f"0:{offset}:0")
        if changes is not None and service.serving != serving:
            changes.append((offset, service.serving))
    service.gate.next = {0: len(events)}  # what the agent records after each batch
    return service


# The challenger forgets fast: it votes with the user's last item only and its taste halves
# every hour. Worse than the champion on a steady taste, better right after a shift, until the
# champion's longer memory has caught up.
SETTINGS = Settings(
    live_eval_share=1.0, recs_challengers=[{"history": 1, "half_life_s": 3600.0}], promotion_window=300,
    promotion_margin=0.05, rollback_drop=0.05,
)


def test_a_fast_forgetting_challenger_is_promoted_after_a_taste_shift_and_the_champion_wins_back() -> None:
    items, events = shifting_stream()
    changes: list = []
    started = time.time()
    service = run(SETTINGS, items, events, changes)

    # Promoted after the shift (event 6,000), not before it; then the champion, its history
    # now full of the new taste, beats it again and is promoted back.
    assert [serving for _, serving in changes] == ["v2", "v1"], changes
    assert 6_000 < changes[0][0] < changes[1][0] < 12_000, changes
    alerts = [orjson.loads(value) for _, _, value in service.outbox]
    assert [a["kind"] for a in alerts] == ["model_promote", "model_promote"]
    # Stamped with when the switch happened (the dashboard sorts alerts by it), not with the
    # event time of the stream the models learned, which may be years back.
    assert all(started <= a["ts"] <= time.time() for a in alerts) and service.clock < started - 86_400
    assert alerts[0]["subject"] == "recommender"
    assert "v2 hit rate" in alerts[0]["detail"] and "beats v1" in alerts[0]["detail"]
    assert "v1 hit rate" in alerts[1]["detail"] and "beats v2" in alerts[1]["detail"]
    v1, v2 = service.versions["v1"].score, service.versions["v2"].score
    assert v1.hits > v2.hits  # over the whole stream, the longer memory wins


def test_rollback_restores_the_previous_versions_exact_predictions() -> None:
    items, events = shifting_stream()
    changes: list = []
    run(SETTINGS, items, events, changes)
    promoted = changes[0][0] + 1  # the stream up to the challenger's promotion
    service = run(SETTINGS, items, events[:promoted])
    assert service.serving == "v2"
    service.switch(Decision("rollback", "v1", "asked by a test"), by="admin")

    alone = run(Settings(live_eval_share=1.0), items, events[:promoted])  # v1 only, never promoted away
    assert service.serving == "v1" and service.previous == "v2"
    for user in ("u0", "u7", "u42", "u149"):
        ours = service.recommendations(user)["items"]
        theirs = alone.recommendations(user)["items"]
        assert [(i["item_id"], i["score"], i["reason"]) for i in ours] == \
            [(i["item_id"], i["score"], i["reason"]) for i in theirs]
    assert orjson.loads(service.outbox[-1][2])["kind"] == "model_rollback"


def test_the_policy_rolls_back_a_champion_whose_hit_rate_falls() -> None:
    policy = Policy(margin=0.05, window=10, drop=0.05)
    windows = {"v1": Window(10), "v2": Window(10)}
    for _ in range(10):
        windows["v1"].add(1)
        windows["v2"].add(0)
    # 10 targets v1 hit and v2 missed: McNemar z = 10 / sqrt(10) = 3.16.
    # v2 was promoted at 0.8; it now hits 0 of 10 while v1, in the shadow, hits 10.
    decision = decide(policy, windows, serving="v2", previous="v1", since_change=10, promoted_at=0.8)
    assert decision == Decision(
        "rollback", "v1",
        "v2 hit rate fell to 0.000 from 0.800 at its promotion (more than 5.0%) over the last 10 targets; "
        "v1 scores 1.000",
    )
    # Not before the promoted version has had a full window.
    assert decide(policy, windows, serving="v2", previous="v1", since_change=9, promoted_at=0.8) is None
    # Nor when automation is off.
    off = Policy(margin=0.05, window=10, drop=0.05, auto=False)
    assert decide(off, windows, serving="v2", previous="v1", since_change=10, promoted_at=0.8) is None


def test_a_snapshot_round_trip_gives_identical_lists(tmp_path) -> None:  # noqa: ANN001
    items, events = shifting_stream(n=3000)
    service = run(SETTINGS, items, events)
    meta, body = service.snapshot("interactions")
    store = SnapshotStore(tmp_path, keep=2)
    store.save(meta, body)
    found = store.latest("recommender", topic="interactions", partitions={0})
    assert found is not None
    restored = RecommenderService(SETTINGS)
    restored.restore(*found, "interactions")
    assert restored.gate.next == {0: 3000}
    assert restored.serving == service.serving
    for user in ("u1", "u99"):
        a, b = service.recommendations(user), restored.recommendations(user)
        assert a["items"] == b["items"]


def test_a_damaged_snapshot_is_skipped_for_the_previous_one(tmp_path) -> None:  # noqa: ANN001
    service = run(SETTINGS, *shifting_stream(n=500))
    store = SnapshotStore(tmp_path, keep=5)
    first = store.save(*service.snapshot("interactions"))
    second = store.save(*service.snapshot("interactions"))
    with open(second.path, "r+b") as fh:  # flip the last byte of the newest body
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 0xFF]))
    meta, _ = store.latest("recommender", topic="interactions")
    assert meta.seq == first.seq


def test_challenger_settings_refuse_unknown_parameters() -> None:
    with pytest.raises(ValueError, match="unknown recommender parameters"):
        Settings(recs_challengers=[{"half_lfe_s": 3600}])


def test_ctr_below_the_floor_alerts_once_and_resets_into_a_fresh_challenger() -> None:
    settings = Settings(live_eval_share=1.0, ctr_floor=0.05, ctr_window=500, drift_reaction="reset")
    service = run(settings, *shifting_stream(n=200))
    service.outbox.clear()
    for i in range(2000):  # served lists are shown and almost never clicked
        action = "click" if i % 100 == 0 else "impression"
        event = validate_event({"type": "interaction", "event_id": f"x{i}", "ts": 1e6 + i, "user_id": f"u{i % 150}",
                                "item_id": f"it{i % 200}", "action": action, "rec_id": f"r{i}", "position": i % 10})
        service.learn(Coalescer(), event, KEYS, f"0:{10_000 + i}:0")
        if i % 100 == 99:
            service.finish(Coalescer(), [], KEYS)  # one batch
    alerts = [orjson.loads(v) for _, _, v in service.outbox]
    ctr = [a for a in alerts if a["kind"].startswith("ctr")]
    assert [(a["kind"], a["severity"], a["subject"]) for a in ctr] == [("ctr_low", "critical", "recommender")]
    assert ctr[0]["detail"] == ("CTR of recommender's recommendations fell to 1.01% over the last 594 "
                                "impressions, below the floor of 5.00%")
    assert [reaction for reaction, _ in service.grow] == ["reset"]
    version = service.fresh_version("reset")
    assert version.name == "rt1" and version.model.params() == service.model.params()


def test_hits_collapsing_is_found_as_error_drift() -> None:
    settings = Settings(live_eval_share=1.0)
    items, events = shifting_stream(n=8_000, shift=False)
    # Then users click at random among 2,000 new items nobody can predict.
    rng = random.Random(3)
    items += [{"type": "item", "event_id": f"n{j}", "ts": 500.0, "item_id": f"new{j}", "title": f"odd {j}",
               "category": "odd"} for j in range(2000)]
    events += [{"type": "interaction", "event_id": f"z{i}", "ts": 1e6 + i, "user_id": f"u{rng.randrange(150)}",
                "item_id": f"new{rng.randrange(2000)}", "action": "click"} for i in range(6000)]
    service = run(settings, items, events)  # one version: no promotion can hide the shift
    kinds = [orjson.loads(v)["kind"] for _, _, v in service.outbox]
    assert "error_drift" in kinds
    drift = next(orjson.loads(v) for _, _, v in service.outbox if orjson.loads(v)["kind"] == "error_drift")
    assert drift["subject"] == "recommender" and "online error of recommender rose" in drift["detail"]
