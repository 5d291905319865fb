"""Champion and challengers: which version of a model serves, decided from online figures.

Every version learns the same stream and is scored test-then-train on the same targets;
:class:`Window` keeps each one's last ``size`` outcomes. :func:`decide` is the whole
policy, a pure function of those windows:

* **promote** the best challenger when, over a full window, its hit rate beats the
  champion's by at least ``margin`` (relative) — and only after the last change has had a
  full window of its own, so the choice does not flap;
* **roll back** to the previous champion when the serving version's hit rate over a full
  window since its promotion has fallen more than ``drop`` (relative) below the rate that
  got it promoted, and the previous champion, still learning in the shadow, does better.

>>> cfg = Policy(margin=0.1, window=4, drop=0.05)
>>> w = {"v1": Window(4), "v2": Window(4)}
>>> for hit1, hit2 in [(0, 1), (1, 1), (0, 1), (0, 0)]:
...     w["v1"].add(hit1)
...     w["v2"].add(hit2)
>>> decide(cfg, w, serving="v1", previous=None, since_change=4, promoted_at=None)
Decision(action='promote', version='v2', detail='v2 hit rate 0.750 beats v1 0.250 by 200.0% over the last 4 targets (margin 10.0%)')
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass


class Window:
    """The last ``size`` test-then-train outcomes of one version (1 = hit)."""

    def __init__(self, size: int) -> None:
        self.outcomes: deque[int] = deque(maxlen=size)
        self.hits = 0

    def add(self, hit: int) -> None:
        if len(self.outcomes) == self.outcomes.maxlen:
            self.hits -= self.outcomes[0]
        self.outcomes.append(hit)
        self.hits += hit

    @property
    def n(self) -> int:
        return len(self.outcomes)

    @property
    def full(self) -> bool:
        return len(self.outcomes) == self.outcomes.maxlen

    @property
    def rate(self) -> float:
        return self.hits / len(self.outcomes) if self.outcomes else 0.0


@dataclass(frozen=True)
class Policy:
    """``margin``: relative gain a challenger needs; ``window``: targets each figure is
    taken over; ``drop``: relative fall of the serving version that rolls it back."""

    margin: float = 0.05
    window: int = 500
    drop: float = 0.05
    auto: bool = True


@dataclass(frozen=True)
class Decision:
    action: str  # "promote" | "rollback"
    version: str
    detail: str


def decide(
    policy: Policy,
    windows: Mapping[str, Window],
    *,
    serving: str,
    previous: str | None,
    since_change: int,
    promoted_at: float | None,
) -> Decision | None:
    """What to do now, if anything (see the module docstring)."""
    if not policy.auto or since_change < policy.window:
        return None
    champion = windows[serving]
    if not champion.full:
        return None
    if previous is not None and promoted_at is not None and previous in windows:
        floor = promoted_at * (1 - policy.drop)
        shadow = windows[previous]
        if champion.rate < floor and shadow.full and shadow.rate > champion.rate:
            return Decision(
                "rollback", previous,
                f"{serving} hit rate fell to {champion.rate:.3f} from {promoted_at:.3f} at its promotion "
                f"(more than {policy.drop:.1%}) over the last {champion.n} targets; "
                f"{previous} scores {shadow.rate:.3f}",
            )
    best = None
    for version, window in windows.items():
        if version == serving or not window.full:
            continue
        beats = window.rate > champion.rate and window.rate >= champion.rate * (1 + policy.margin)
        if beats and (best is None or window.rate > windows[best].rate):
            best = version
    if best is None:
        return None
    rate = windows[best].rate
    gain = (rate - champion.rate) / champion.rate if champion.rate else float("inf")
    return Decision(
        "promote", best,
        f"{best} hit rate {rate:.3f} beats {serving} {champion.rate:.3f} by {gain:.1%} over the last "
        f"{champion.n} targets (margin {policy.margin:.1%})",
    )
