"""Quality on real data: the recommender against the baselines on a committed slice of
MovieTweetings (tests/data/README.md), through ``eddy evaluate``'s own code path."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from deploy.evaluate import default_models, load_events
from online_models.evaluation import Prequential
from online_models.hybrid import HybridRecommender
from online_models.sharded import Sharded

SLICE = Path(__file__).parents[1] / "data" / "movietweetings-30k.jsonl.gz"

#: Just under what the recommender scored on the slice when this floor was set (HR@10
#: 0.3860, NDCG@10 0.3029 on 2026-12-04; docs/quality.md has the command).
FLOOR = {"hr": 0.37, "ndcg": 0.29}


def test_the_recommender_beats_every_baseline_on_real_ratings() -> None:
    events, invalid = load_events(SLICE, Console(stderr=True))
    assert invalid == 0 and len(events) == 30_000
    report = Prequential(default_models(), k=10).run(events)
    assert report["targets"] > 10_000
    models = report["models"]
    eddy = models.pop("eddy")
    assert set(models) == {"popularity", "decayed_popularity", "knn"}
    for metric, floor in FLOOR.items():
        best = max(m[metric] for m in models.values())
        assert eddy[metric] >= floor, (metric, eddy[metric], floor)
        assert eddy[metric] >= 1.05 * best, (metric, eddy[metric], best)  # the rule of docs/quality.md


def test_four_workers_sharing_item_facts_score_within_two_percent_of_one() -> None:
    """Users spread over four workers (online_models/sharded.py): with the item facts shared,
    HR@10 stays within 2% of one worker's; each learning from its own users only, it drops."""
    events, _ = load_events(SLICE, Console(stderr=True))
    one, four, alone = HybridRecommender(), Sharded(HybridRecommender, 4), Sharded(HybridRecommender, 4, exchange_every=0)
    models = Prequential({"one": one, "four": four, "alone": alone}, k=10).run(events)["models"]
    assert models["four"]["hr"] >= 0.98 * models["one"]["hr"], models
    assert models["alone"]["hr"] < 0.95 * models["one"]["hr"], models  # what sharing is for
