"""Prequential (test-then-train) evaluation of recommenders on an event stream.

Protocol: events are taken in event-time order. Every positive interaction (click, like,
save, view, rate >= 4) on an item the user has not interacted with before is a target:
before it is learned, each model ranks k items for the user, excluding the items the
user already interacted with (impressions do not count: they are what was shown, not
what the user did); a hit scores HR 1 and NDCG
1/log2(rank + 2). Then every model learns the event — targets included, a user's first
event included. Catalogue coverage is the share of items ever served that were known.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from online_models.base import Recommender, is_positive
from online_models.feed import learn_event


def ranked_ids(model: Recommender, user_id: str, k: int, now: float, exclude: set[str]) -> list[str]:
    """The ids ``model.rank`` would list, through the model's cheaper path where it has one
    (the same scoring, without working out reasons)."""
    fast = getattr(model, "ranked_ids", None)
    if fast is not None:
        return fast(user_id, k, now, exclude)
    return [s.item_id for s in model.rank(user_id, k, now, exclude=exclude)]


@dataclass
class Score:
    """Running HR@k, NDCG@k and coverage of one model."""

    targets: int = 0
    hits: int = 0
    ndcg_sum: float = 0.0
    served: set[str] = field(default_factory=set)

    def add(self, ranked: list[str], target: str) -> None:
        self.targets += 1
        self.served.update(ranked)
        if target in ranked:
            self.hits += 1
            self.ndcg_sum += 1.0 / math.log2(ranked.index(target) + 2)

    def report(self, catalogue: int) -> dict[str, float]:
        n = max(1, self.targets)
        return {
            "hr": self.hits / n,
            "ndcg": self.ndcg_sum / n,
            "coverage": len(self.served) / catalogue if catalogue else 0.0,
        }


@dataclass
class Prequential:
    """Runs several models side by side over one stream, test-then-train."""

    models: Mapping[str, Recommender]
    k: int = 10
    events: int = 0
    scores: dict[str, Score] = field(default_factory=dict)
    interacted: dict[str, set[str]] = field(default_factory=dict)
    catalogue: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.scores = {name: Score() for name in self.models}

    def step(self, event: Any) -> None:
        self.events += 1
        kind = event.type
        if kind == "item":
            self.catalogue.add(event.item_id)
        elif kind == "interaction" and is_positive(event.action, event.value):
            seen = self.interacted.get(event.user_id, set())
            if event.item_id not in seen:  # a repeat is not a prediction target
                for name, model in self.models.items():
                    self.scores[name].add(ranked_ids(model, event.user_id, self.k, event.ts or 0.0, seen), event.item_id)
        if kind == "interaction" and event.action != "impression":
            # An impression is Eddy showing the item, not the user acting on it.
            self.interacted.setdefault(event.user_id, set()).add(event.item_id)
        elif kind == "user_deleted":
            self.interacted.pop(event.user_id, None)
        for model in self.models.values():
            learn_event(model, event)

    def run(self, events: Iterable[Any], progress: Callable[[int], None] | None = None) -> dict:
        for event in events:
            self.step(event)
            if progress is not None:
                progress(1)
        return self.report()

    def report(self) -> dict:
        targets = next(iter(self.scores.values())).targets if self.scores else 0
        return {
            "events": self.events,
            "targets": targets,
            "k": self.k,
            "models": {name: s.report(len(self.catalogue)) for name, s in self.scores.items()},
        }
