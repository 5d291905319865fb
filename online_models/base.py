"""The contract every online recommender in Eddy follows, defined once.

Recommenders learn from one signal at a time (``learn_item``, ``learn_interaction``,
``learn_preference``, ``forget_user``) and answer ``rank`` without changing themselves:
a read must never mutate a model (River's ``BiasedMF.predict_one`` does, for unknown ids;
Eddy's models do not). The same objects serve the live worker and ``eddy evaluate``.

Interactions arrive as a signed weight: positive for click/like/save/view/high ratings,
negative for dislike/hide/low ratings, slightly negative for an ignored impression
(see :func:`signal_of`).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Weight of each action as a taste signal. Ratings map through :func:`signal_of`.
ACTION_WEIGHTS: Mapping[str, float] = {
    "click": 1.0,
    "view": 0.5,
    "like": 2.0,
    "save": 2.0,
    "dislike": -2.0,
    "hide": -2.0,
    "impression": -0.1,
}

POSITIVE_ACTIONS = frozenset({"click", "view", "like", "save"})


def signal_of(action: str, value: float | None = None) -> float:
    """The taste signal of an interaction: > 0 liked, < 0 disliked, 0 neutral."""
    if action == "rate":
        assert value is not None
        return 2.0 if value >= 4 else -2.0 if value <= 2 else 0.0
    return ACTION_WEIGHTS.get(action, 0.0)


def is_consumption(signal: float) -> bool:
    """Whether an interaction of this signal is the user acting on the item: anything but an
    impression (exposure, the only signal between -0.5 and 0), so a neutral rating counts."""
    return signal >= 0 or signal <= -0.5


def is_positive(action: str, value: float | None = None) -> bool:
    """A target of the evaluation protocol: click, like, save, view or rate >= 4."""
    return action in POSITIVE_ACTIONS or (action == "rate" and value is not None and value >= 4)


@dataclass(frozen=True)
class Scored:
    """One recommended item with its score and a human-readable reason."""

    item_id: str
    score: float
    reason: str = ""
    components: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemInfo:
    """What a recommender may know about an item."""

    item_id: str
    category: str | None = None
    tags: tuple[str, ...] = ()
    source: str | None = None
    domain: str | None = None  # where it was scraped from (scraping reliability is kept per domain)
    text: str = ""
    deadline: float | None = None
    ts: float = 0.0


class Recommender(abc.ABC):
    """Base class: learn from signals one at a time, rank without mutating."""

    #: Bumped when the learning code changes in a way that changes outputs.
    version: str = "0"

    def learn_item(self, item: ItemInfo) -> None:
        """Add or replace an item of the catalogue (content models use its features)."""

    def retract_item(self, item_id: str) -> None:
        """The item must never be recommended again."""

    @abc.abstractmethod
    def learn_interaction(self, user_id: str, item_id: str, signal: float, ts: float) -> None:
        """Learn one interaction with signal strength ``signal`` at event time ``ts``."""

    def learn_preference(self, user_id: str, interests: Mapping[str, float], ts: float) -> None:
        """Declared interests (category or tag -> weight in [-1, 1])."""

    def forget_user(self, user_id: str) -> None:
        """Remove every trace of the user that is not an anonymous aggregate."""

    @abc.abstractmethod
    def rank(
        self, user_id: str, k: int, now: float, exclude: Iterable[str] = ()
    ) -> list[Scored]:
        """The top-k items for the user at time ``now``; must not change the model."""
