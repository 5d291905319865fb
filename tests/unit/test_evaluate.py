"""``eddy evaluate`` end to end on a file, and the prequential protocol on a literal stream."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from online_models.evaluation import Prequential
from online_models.popularity import Popularity
from schemas.events import validate_event


def test_protocol_scores_before_learning_and_skips_repeats_and_impressions() -> None:
    docs = [
        {"type": "item", "item_id": "a", "ts": 0}, {"type": "item", "item_id": "b", "ts": 0},
        {"type": "interaction", "user_id": "u1", "item_id": "a", "action": "click", "ts": 1},  # target: miss (nothing learned)
        {"type": "interaction", "user_id": "u2", "item_id": "b", "action": "impression", "ts": 2},  # not a target
        {"type": "interaction", "user_id": "u2", "item_id": "a", "action": "like", "ts": 3},  # target: hit at rank 1
        {"type": "interaction", "user_id": "u2", "item_id": "a", "action": "click", "ts": 4},  # repeat: not a target
        {"type": "interaction", "user_id": "u2", "item_id": "b", "action": "rate", "value": 5, "ts": 5},  # miss: a excluded, b never liked yet
        {"type": "interaction", "user_id": "u3", "item_id": "b", "action": "rate", "value": 3, "ts": 6},  # not positive
    ]
    report = Prequential({"popularity": Popularity()}, k=1).run(validate_event(d) for d in docs)
    assert report == {"events": 8, "targets": 3, "k": 1,
                      "models": {"popularity": {"hr": 1 / 3, "ndcg": 1 / 3, "coverage": 0.5}}}


def test_eddy_evaluate_json_on_a_simulated_file(tmp_path: Path) -> None:
    from deploy.simulator import SimConfig, Simulator

    path = tmp_path / "events.jsonl"
    lines = [orjson.dumps(d) for d in Simulator(SimConfig(seed=3)).take(6_000)]
    lines.insert(10, b"{broken")
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "evaluate", str(path), "--k", "10", "--json"],
        capture_output=True, check=True, timeout=300,
    )
    report = orjson.loads(out.stdout)
    assert set(report) == {"events", "targets", "k", "models", "invalid_lines", "seconds", "events_per_s"}
    assert report["invalid_lines"] == 1 and report["k"] == 10
    assert set(report["models"]) == {"eddy", "popularity", "decayed_popularity", "knn"}
    assert report["events_per_s"] > 0 and report["seconds"] >= 0
    assert report["targets"] > 300
    for m in report["models"].values():
        assert 0 <= m["hr"] <= 1 and 0 <= m["ndcg"] <= m["hr"] and 0 < m["coverage"] <= 1
    assert report["models"]["eddy"]["hr"] > report["models"]["popularity"]["hr"]


def test_models_replayed_in_parallel_processes_score_exactly_as_in_one() -> None:
    from deploy.evaluate import default_models, model_groups, replay_in_parallel
    from deploy.simulator import SimConfig, Simulator

    events = [validate_event(d) for d in Simulator(SimConfig(seed=5)).take(3_000)]
    events.sort(key=lambda e: e.ts)
    assert model_groups(default_models(2)) == [["eddy"], ["eddy_2_workers"], ["popularity", "decayed_popularity", "knn"]]
    together = Prequential(default_models(2), k=10).run(events)
    told: list[int] = []
    apart = replay_in_parallel(events, default_models(2), 10, told.append)
    assert apart == together
    assert list(apart["models"]) == list(together["models"])  # the order asked for
    assert sum(told) == len(events)
