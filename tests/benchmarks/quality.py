"""Where the recommender's hits come from, on a real stream: ``eddy evaluate``'s protocol with
each target split by user (new: no earlier action; known) and item (cold: nobody had acted
on it; warm), and an ablation without the freshness features (fresh, fresh_content),
which on a stream whose item events sit just before their first rating say more about the
conversion than about the users: there the newest untouched item is, very often, the next
one rated. Figures go to docs/quality.md.

    python -m tests.benchmarks.quality ../shared/data/movietweetings-2013.jsonl.gz
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console

from deploy.evaluate import default_models, load_events
from online_models.base import is_positive
from online_models.evaluation import ranked_ids
from online_models.feed import learn_event
from online_models.hybrid import FEATURES, HybridRecommender

FRESHNESS = ("fresh", "fresh_content")


class WithoutFreshness(HybridRecommender):
    """The recommender blind to newness: freshness features held at 0 and every item in the
    known-item segment (the segment alone would tell an untouched item apart)."""

    def _featurise(self, ctx, keys, rows, now, scale=None):  # type: ignore[no-untyped-def]
        X, item_new, tops = super()._featurise(ctx, keys, rows, now, scale)
        X[:, [FEATURES.index(f) for f in FRESHNESS]] = 0.0
        return X, np.zeros_like(item_new), tops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path)
    args = parser.parse_args()
    events, _ = load_events(args.path, Console(stderr=True))
    models = {**default_models(), "eddy_without_freshness": WithoutFreshness()}
    hits: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0])  # (model, segment) -> hits, ndcg, n
    acted: dict[str, set[str]] = {}
    warm: set[str] = set()
    started = time.perf_counter()
    for event in events:
        if event.type == "interaction" and is_positive(event.action, event.value):
            seen = acted.get(event.user_id, set())
            if event.item_id not in seen:
                segments = ("all", "user:known" if seen else "user:new", "item:warm" if event.item_id in warm else "item:cold")
                for name, model in models.items():
                    ranked = ranked_ids(model, event.user_id, 10, event.ts or 0.0, seen)
                    gain = 1.0 / math.log2(ranked.index(event.item_id) + 2) if event.item_id in ranked else 0.0
                    for seg in segments:
                        cell = hits[(name, seg)]
                        cell[0] += gain > 0
                        cell[1] += gain
                        cell[2] += 1
        if event.type == "interaction" and event.action != "impression":
            acted.setdefault(event.user_id, set()).add(event.item_id)
            warm.add(event.item_id)
        for model in models.values():
            learn_event(model, event)
    print(f"{args.path.name}: {len(events):,} events in {time.perf_counter() - started:.0f} s\n")
    segments = ("all", "user:new", "user:known", "item:cold", "item:warm")
    print("| model | " + " | ".join(f"{s} HR@10 / NDCG@10" for s in segments) + " |")
    print("|---|" + "---:|" * len(segments))
    for name in models:
        cells = []
        for seg in segments:
            h, g, n = hits[(name, seg)]
            cells.append(f"{h / n:.4f} / {g / n:.4f}" if n else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\ntargets per segment: " + ", ".join(f"{s} {hits[('eddy', s)][2]:,}" for s in segments))
    weights = models["eddy"].weights()
    print("\nlearned weights (eddy), per group:")
    for group, w in weights.items():
        top = sorted(w.items(), key=lambda kv: -abs(kv[1]))[:6]
        print(f"  {group}: " + ", ".join(f"{f} {v:+.2f}" for f, v in top))


if __name__ == "__main__":
    main()
