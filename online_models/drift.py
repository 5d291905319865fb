"""Model health: notice when a model's online error, its inputs or its served CTR go wrong.

A :class:`ModelHealth` watches one model through three streams the worker already has:
its online error (test-then-train: ``1 - hit`` for a recommender, ``|y - p|`` or log loss
for the bid classifier, ``1 - success`` for a scraping strategy), the numeric features it
learns from, and the impressions and clicks of the lists it served. The first two are
watched with the same guarded River ``ADWIN`` as the scrape-shape monitor
(:class:`online_models.scrape_shape.ShapeMonitor`): the detector firing is only a
suspicion, confirmed when the recent window has moved from the reference by a minimum
effect size and beyond the reference's own wobble, then the stream starts again from the
new regime after a cooldown. The CTR is judged against a floor with hysteresis: one
finding when it falls below, one when it is back above, nothing in between.

Every :class:`Finding` says whether things got ``worse``; :func:`reaction_for` turns a
finding and the configured reaction into what the worker should do. This module only
decides: the worker sends the alert and carries out the reaction.

>>> from online_models.drift import ModelHealth, reaction_for
>>> health = ModelHealth("bids", warmup=0, window=50)
>>> errors = [0.0, 0.0, 0.0, 1.0] * 100 + [1.0, 1.0, 1.0, 0.0] * 100
>>> findings = [f for x in errors if (f := health.observe_error(x, ts=0.0))]
>>> [f.detail for f in findings]
['online error of bids rose from 0.25 to 0.76 at observation 448']
>>> reaction_for(findings[0], "challenger")
'challenger'
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from river import base

from online_models.scrape_shape import ShapeMonitor, Shift

Kind = Literal["error_drift", "feature_drift", "ctr_low", "ctr_recovered"]
Severity = Literal["info", "warning", "critical"]

#: The reactions an operator may configure (``EDDY_DRIFT_REACTION``).
REACTIONS = ("alert", "reset", "challenger")

ERROR = "error"  # the error stream's name inside its monitor

#: Parameters for an error stream that is nearly always 1, such as a recommender's
#: ``1 - hit`` when about 5% of positives are hits: the defaults need a shift of 0.25
#: standard deviations, which a hit rate halving there is not. With these, a hit rate going
#: from 5% to 2% is found within about 2,500 examples (tests/unit/test_drift.py).
RARE_HITS: Mapping[str, float] = MappingProxyType(
    {"window": 2_000, "min_effect": 0.1, "warmup": 2_000, "cooldown": 2_000}
)


@dataclass(frozen=True)
class Finding:
    """Something about one model worth an alert.

    ``before`` and ``after`` are means: of the error or the feature before and since the
    shift, or for the CTR the floor (``ctr_low``) or the CTR when it fell (``ctr_recovered``)
    and the CTR now. ``index`` counts the observations of the stream that found it (errors,
    feature observations, impressions). ``worse`` is False for an improvement or a recovery,
    which is reported but never reacted to.
    """

    model: str
    kind: Kind
    before: float
    after: float
    index: int
    ts: float
    detail: str
    severity: Severity
    worse: bool
    feature: str | None = None


def reaction_for(finding: Finding, configured: str) -> str:
    """What to do about a finding: ``"alert"`` (only alert), ``"reset"`` or ``"challenger"``.

    Improvements and recoveries only alert. Everything worse gets the configured reaction,
    except that a feature drift never resets: the model's error has not moved (yet), and
    throwing away a model that may still be right is worse than waiting for the error
    detector. A challenger trained from replay is cheap and only replaces the model if it
    does better, so feature drift may start one.

    >>> f = Finding("hybrid", "feature_drift", 0.1, 0.9, 900, 0.0, "...", "warning", True, "price")
    >>> [reaction_for(f, r) for r in REACTIONS]
    ['alert', 'alert', 'challenger']
    """
    if configured not in REACTIONS:
        raise ValueError(f"unknown drift reaction {configured!r}; expected one of {', '.join(REACTIONS)}")
    if not finding.worse:
        return "alert"
    if finding.kind == "feature_drift" and configured == "reset":
        return "alert"
    return configured


def _numeric(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        x = float(value)
        return x if math.isfinite(x) else None
    return None


class ModelHealth(base.Base):
    """Watches one model's online error, input features and served CTR.

    As in :class:`~online_models.scrape_shape.ShapeMonitor`, values beyond [-1, 1] are
    compared by their signed log: log loss and heavy-tailed features shift by factors.

    Parameters
    ----------
    model
        The model's name, carried by every :class:`Finding` (the alert's subject).
    features
        Names of the input features to watch. ``None`` watches the first ``max_features``
        numeric features seen (in name order within an observation); others are ignored.
    max_features
        Most features watched when ``features`` is ``None``: each costs a detector and a
        window of ``window`` floats.
    delta
        ADWIN's significance: smaller means fewer, later detections.
    window, min_effect, min_z, warmup, cooldown
        As in :class:`~online_models.scrape_shape.ShapeMonitor`, for the error stream and
        each feature: a finding needs the recent ``window`` to differ from the reference by
        ``min_effect`` pooled standard deviations and ``min_z`` standard deviations of a
        window's mean; none in the first ``warmup`` observations (and two windows of
        reference), none within ``cooldown`` observations of the last one.
    ctr_floor
        A finding when the CTR of served lists falls below this (0 switches it off).
    ctr_window
        The CTR is measured over about the last ``ctr_window`` impressions.
    ctr_min_impressions
        Impressions needed before the CTR is judged at all (at most ``ctr_window``).
    ctr_hysteresis
        After a fall, the CTR has recovered once at least ``ctr_floor * (1 + ctr_hysteresis)``.

    The defaults find an error rate going from 0.2 to 0.5 within about 170 examples; for an
    error that is nearly always 1, pass :data:`RARE_HITS`.

    >>> health = ModelHealth("hybrid", ctr_floor=0.02, ctr_window=1000, ctr_min_impressions=500)
    >>> batches = [(100, 3)] * 10 + [(100, 1)] * 10 + [(100, 4)] * 10
    >>> [(f.kind, f.index, f.after) for n, c in batches if (f := health.observe_ctr(n, c, ts=0.0))]
    [('ctr_low', 1600, 0.018), ('ctr_recovered', 2500, 0.025)]
    """

    def __init__(
        self,
        model: str,
        features: Sequence[str] | None = None,
        max_features: int = 32,
        delta: float = 0.002,
        window: int = 300,
        min_effect: float = 0.25,
        min_z: float = 5.0,
        warmup: int = 500,
        cooldown: int = 500,
        ctr_floor: float = 0.0,
        ctr_window: int = 2_000,
        ctr_min_impressions: int = 500,
        ctr_hysteresis: float = 0.2,
    ) -> None:
        self.model = model
        self.features = None if features is None else tuple(features)
        self.max_features = max_features
        self.delta = delta
        self.window = window
        self.min_effect = min_effect
        self.min_z = min_z
        self.warmup = warmup
        self.cooldown = cooldown
        self.ctr_floor = ctr_floor
        self.ctr_window = ctr_window
        self.ctr_min_impressions = ctr_min_impressions
        self.ctr_hysteresis = ctr_hysteresis
        self._errors = self._monitor()
        self._inputs = self._monitor()
        self._watched: set[str] = set(self.features or ())
        self._impressions = 0
        self._ctr_chunks: deque[tuple[int, int]] = deque()  # (impressions, clicks) per call
        self._ctr_sums = [0, 0]
        self._ctr_low_at: float | None = None  # the CTR when it fell, while it stays low
        self._findings = 0

    def _monitor(self) -> ShapeMonitor:
        return ShapeMonitor(
            warmup=self.warmup, cooldown=self.cooldown, window=self.window, min_effect=self.min_effect,
            min_z=self.min_z, delta=self.delta,
        )

    # --- error ----------------------------------------------------------------------------

    def observe_error(self, x: float, ts: float) -> Finding | None:
        """Learn the model's error on one example, scored before the model learnt it
        (test-then-train); a finding when the error shifted. NaN and infinities are skipped."""
        value = _numeric(x)
        if value is None:
            return None
        for shift in self._errors.learn_one({ERROR: value}):
            return self._found(self._error_finding(shift, ts))
        return None

    def _error_finding(self, s: Shift, ts: float) -> Finding:
        worse = s.after > s.before
        verb = "rose" if worse else "fell"
        detail = f"online error of {self.model} {verb} from {s.before:.2f} to {s.after:.2f} at observation {s.index}"
        return Finding(self.model, "error_drift", s.before, s.after, s.index, ts, detail,
                       "warning" if worse else "info", worse)

    # --- features -------------------------------------------------------------------------

    def observe_features(self, features: Mapping[str, Any], ts: float) -> list[Finding]:
        """Learn the numeric features of one example; a finding per feature that shifted.

        Non-numeric, NaN and infinite values are skipped; so are features beyond the
        watched ones. The list is usually empty.
        """
        values: dict[str, float] = {}
        for name in sorted(features):
            value = _numeric(features[name])
            if value is None:
                continue
            if name not in self._watched:
                if self.features is not None or len(self._watched) >= self.max_features:
                    continue
                self._watched.add(name)
            values[name] = value
        return [self._found(self._feature_finding(s, ts)) for s in self._inputs.learn_one(values)]

    def _feature_finding(self, s: Shift, ts: float) -> Finding:
        verb = "rose" if s.after > s.before else "fell"
        detail = (f"input feature {s.feature!r} of {self.model} shifted: its mean {verb} from "
                  f"{s.before:.4g} to {s.after:.4g} at observation {s.index}")
        return Finding(self.model, "feature_drift", s.before, s.after, s.index, ts, detail, "warning", True,
                       s.feature)

    # --- CTR ------------------------------------------------------------------------------

    def observe_ctr(self, impressions: int, clicks: int, ts: float) -> Finding | None:
        """Count impressions and clicks of served lists (since the last call); a finding
        when the CTR falls below the floor or recovers above it."""
        if impressions < 0 or clicks < 0:
            raise ValueError("impressions and clicks must be >= 0")
        if self.ctr_floor <= 0 or (impressions == 0 and clicks == 0):
            return None
        self._impressions += impressions
        self._ctr_chunks.append((impressions, clicks))
        self._ctr_sums[0] += impressions
        self._ctr_sums[1] += clicks
        while self._ctr_sums[0] - self._ctr_chunks[0][0] >= self.ctr_window:
            old_n, old_c = self._ctr_chunks.popleft()
            self._ctr_sums[0] -= old_n
            self._ctr_sums[1] -= old_c
        shown, clicked = self._ctr_sums
        if shown < self._ctr_min():
            return None
        ctr = clicked / shown
        where = f"over the last {shown} impressions"
        if self._ctr_low_at is None and ctr < self.ctr_floor:
            self._ctr_low_at = ctr
            detail = (f"CTR of {self.model}'s recommendations fell to {ctr:.2%} {where}, "
                      f"below the floor of {self.ctr_floor:.2%}")
            return self._found(Finding(self.model, "ctr_low", self.ctr_floor, ctr, self._impressions, ts, detail,
                                       "critical", True))
        if self._ctr_low_at is not None and ctr >= self.ctr_floor * (1 + self.ctr_hysteresis):
            low, self._ctr_low_at = self._ctr_low_at, None
            detail = (f"CTR of {self.model}'s recommendations recovered to {ctr:.2%} {where} "
                      f"(floor {self.ctr_floor:.2%}; {low:.2%} when it fell)")
            return self._found(Finding(self.model, "ctr_recovered", low, ctr, self._impressions, ts, detail,
                                       "info", False))
        return None

    def _ctr_min(self) -> int:
        # The window keeps at least ctr_window impressions: never ask for more than that.
        return max(1, min(self.ctr_min_impressions, self.ctr_window))

    # --- reads ----------------------------------------------------------------------------

    def _found(self, finding: Finding) -> Finding:
        self._findings += 1
        return finding

    @property
    def ctr(self) -> float | None:
        """The CTR over the current window (None until it has ``ctr_min_impressions``)."""
        shown, clicked = self._ctr_sums
        return clicked / shown if shown >= self._ctr_min() else None

    def summary(self) -> dict[str, Any]:
        """JSON-able: findings so far, the error and feature monitors, the CTR state."""
        errors = self._errors.summary()
        return {
            "model": self.model,
            "findings": self._findings,
            "errors": {"observations": errors["observations"], **errors["features"].get(ERROR, {})},
            "features": self._inputs.summary(),
            "ctr": {"impressions": self._impressions, "window_ctr": self.ctr, "low": self._ctr_low_at is not None},
        }
