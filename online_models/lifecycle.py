"""Champion and challengers: which version of a model serves, decided from online figures.

Every version learns the same stream and is scored test-then-train on the same targets;
:class:`Window` keeps each one's last ``size`` outcomes. :func:`decide` is the whole
policy, a pure function of those windows:

* **promote** the best challenger when, over a full window, its hit rate beats the
  champion's by at least ``margin`` (relative) and the difference is significant — and
  only after the last change has had a full window of its own, so the choice does not flap;
* **roll back** to the previous champion when the serving version's hit rate over a full
  window since its promotion has fallen more than ``drop`` (relative) below the rate that
  got it promoted, and the previous champion, still learning in the shadow, does
  significantly better.

Both versions are scored on the very same targets, so "significantly better" is a paired
test: McNemar's, on the targets one hit and the other missed (``z`` at least ``min_z``,
1.645 = one-sided 95%). A margin alone would promote on noise: over 300 targets at a 16%
hit rate, two equal models differ by more than 5% about half the time.

>>> cfg = Policy(margin=0.1, window=8, drop=0.05)
>>> w = {"v1": Window(8), "v2": Window(8)}
>>> for hit1, hit2 in [(0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (0, 0), (0, 1), (0, 1)]:
...     w["v1"].add(hit1)
...     w["v2"].add(hit2)
>>> decide(cfg, w, serving="v1", previous=None, since_change=8, promoted_at=None)
Decision(action='promote', version='v2', detail='v2 hit rate 0.875 beats v1 0.125 by 600.0% over the last 8 targets (margin 10.0%, McNemar z 2.45)')
"""

from __future__ import annotations

import math
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
    min_z: float = 1.645


def mcnemar_z(better: Window, worse: Window) -> float:
    """McNemar's z that ``better`` beats ``worse`` on the targets both scored (their last
    common outcomes): (b - c) / sqrt(b + c), b and c the discordant targets.

    >>> a, b = Window(4), Window(4)
    >>> for x, y in [(1, 0), (1, 0), (1, 1), (0, 1)]:
    ...     a.add(x)
    ...     b.add(y)
    >>> round(mcnemar_z(a, b), 3)
    0.577
    """
    wins = losses = 0
    for x, y in zip(reversed(better.outcomes), reversed(worse.outcomes)):
        if x > y:
            wins += 1
        elif y > x:
            losses += 1
    return (wins - losses) / math.sqrt(wins + losses) if wins + losses else 0.0


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
        if champion.rate < floor and shadow.full and mcnemar_z(shadow, champion) >= policy.min_z:
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
        if beats and mcnemar_z(window, champion) >= policy.min_z and (
            best is None or window.rate > windows[best].rate
        ):
            best = version
    if best is None:
        return None
    rate = windows[best].rate
    gain = (rate - champion.rate) / champion.rate if champion.rate else float("inf")
    return Decision(
        "promote", best,
        f"{best} hit rate {rate:.3f} beats {serving} {champion.rate:.3f} by {gain:.1%} over the last "
        f"{champion.n} targets (margin {policy.margin:.1%}, McNemar z {mcnemar_z(windows[best], champion):.2f})",
    )
