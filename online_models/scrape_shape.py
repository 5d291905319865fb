"""Scrape anomaly detection: notice when the shape of what a source yields shifts suddenly.

A broken scraper rarely fails outright: it returns pages without titles, empty pages, or
tags from the wrong part of the page. A :class:`ShapeMonitor` watches named features of one
stream (per source: missing titles, urls and deadlines, title length, tags; per domain:
items found per run), each with River's ``ADWIN``. A detector firing is not yet an alarm:
the recent window must also have moved from the reference (the values before it) by
``min_effect`` pooled standard deviations, so tiny drifts pass, and by ``min_z`` times the
spread window means showed in the reference, so a source whose items come in correlated
batches is judged against its own wobble. After an alarm the feature starts again from the
new regime: one shift, one alarm. This module only detects; the worker turns a
:class:`Shift` into a ``rescrape_request`` and an alert.

>>> from online_models.scrape_shape import ShapeMonitor
>>> monitor = ShapeMonitor()
>>> runs = [10.0, 12.0, 15.0, 11.0] * 100 + [0.0, 0.0, 0.0, 14.0] * 50
>>> [(s.index, s.detail) for n in runs for s in monitor.learn_one({"items_found": n})]
[(416, 'items found per run fell from 12.00 to 3.50')]
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from river import base, drift, stats

#: How a feature reads in a shift's ``detail``; any other feature reads as "mean <name>".
DESCRIPTIONS: Mapping[str, str] = {
    "missing_title": "share of items without a title",
    "missing_url": "share of items without a url",
    "missing_deadline": "share of items without a deadline",
    "title_length": "mean title length",
    "n_tags": "mean number of tags",
    "new_tag_share": "share of tags unusual for the source",
    "items_found": "items found per run",
}

#: Most tags a source's vocabulary remembers (usual, and unusual being counted).
MAX_TAGS = 10_000


def _tags(item: Mapping[str, Any]) -> list[str]:
    return [t.strip().lower() for t in item.get("tags") or () if isinstance(t, str) and t.strip()]


def _missing(value: Any) -> float:
    return float(value is None or (isinstance(value, str) and not value.strip()))


def item_features(item: Mapping[str, Any]) -> dict[str, float]:
    """Shape features of one scraped item (a dict with the ``item`` event's fields).

    ``new_tag_share`` needs the source's tag memory: :class:`SourceShapeMonitor` adds it.

    >>> item_features({"title": " Open call ", "tags": ["Oil", " "], "deadline": None})
    {'missing_title': 0.0, 'missing_url': 1.0, 'missing_deadline': 1.0, 'title_length': 9.0, 'n_tags': 1.0}
    """
    title = item.get("title")
    title = title.strip() if isinstance(title, str) else ""
    return {
        "missing_title": float(not title),
        "missing_url": _missing(item.get("url")),
        "missing_deadline": _missing(item.get("deadline")),
        "title_length": float(len(title)),
        "n_tags": float(len(_tags(item))),
    }


@dataclass(frozen=True)
class Shift:
    """A sudden shift of one feature at the monitor's ``index``-th observation: ``before`` is
    the reference mean, ``after`` the mean of the values since the shift (as best estimated)."""

    feature: str
    before: float
    after: float
    index: int
    detail: str


def _symlog(x: float) -> float:
    # Counts and lengths are heavy-tailed and shift by factors: compare them in log space
    # beyond 1. Shares and 0/1 flags stay as they are, in the range ADWIN's bound assumes.
    return x if abs(x) <= 1.0 else math.copysign(1.0 + math.log(abs(x)), x)


@dataclass
class _Watch:
    """One feature: its detector, its recent window and the reference before that window."""

    detector: drift.ADWIN
    quiet_until: int = 0  # cooldown: no alarm up to this observation
    suspect_until: int = 0  # the detector fired: alarm if the window moves far enough by then
    recent: deque = field(default_factory=deque)  # raw values
    reference: stats.Var = field(default_factory=stats.Var)  # of _symlog(value)
    reference_raw: stats.Mean = field(default_factory=stats.Mean)
    block: stats.Mean = field(default_factory=stats.Mean)  # reference block being filled
    blocks: stats.Var = field(default_factory=stats.Var)  # means of full reference blocks

    def push(self, x: float, window: int) -> None:
        self.recent.append(x)
        if len(self.recent) > window:
            old = self.recent.popleft()
            self.reference.update(_symlog(old))
            self.reference_raw.update(old)
            self.block.update(_symlog(old))
            if self.block.n == window:
                self.blocks.update(self.block.get())
                self.block = stats.Mean()

    def distance(self) -> tuple[float, float]:
        """Recent mean - reference mean, in pooled sds and in sds of a window's mean."""
        recent = [_symlog(x) for x in self.recent]
        diff = abs(statistics.fmean(recent) - self.reference.mean.get())
        pooled = math.sqrt((self.reference.get() + statistics.pvariance(recent)) / 2)
        if pooled == 0.0:  # a constant feature moves only by changing value
            return (math.inf, math.inf) if diff > 1e-12 else (0.0, 0.0)
        wobble = max(pooled / math.sqrt(len(recent)), math.sqrt(self.blocks.get()))
        return diff / pooled, diff / wobble

    def newest_regime(self, min_length: int = 8) -> float:
        """Mean of the values since the shift: the window's newest stretch that stands out
        most from the reference (largest |sum of deviations| / sqrt(length), as in CUSUM)."""
        newest = list(reversed(self.recent))
        reference, total, best, length = self.reference.mean.get(), 0.0, -1.0, len(newest)
        for k, x in enumerate(newest, 1):
            total += _symlog(x) - reference
            if k >= min_length and abs(total) / math.sqrt(k) > best:
                best, length = abs(total) / math.sqrt(k), k
        return statistics.fmean(newest[:length])


class ShapeMonitor(base.Base):
    """Watches named numeric features of one stream (one source) with River drift detectors.

    Values are compared as they are within [-1, 1] (shares, flags) and by their log beyond.

    Parameters
    ----------
    warmup
        No alarm within the first ``warmup`` observations. A feature also needs two full
        windows of reference before it can alarm; a shift before that becomes its baseline.
    cooldown
        After an alarm, the feature starts again from the new regime (new detector, window
        and reference) and cannot alarm for ``cooldown`` observations.
    window
        Size of the recent window compared with the reference.
    min_effect
        Smallest shift worth an alarm, in pooled standard deviations (Cohen's d).
    min_z
        Smallest move of the recent mean in standard deviations of a window's mean as
        measured in the reference: about ``min_effect * sqrt(window)`` for independent values.
    delta, clock
        ADWIN's significance, and how often it checks for a change (in observations).

    >>> monitor = ShapeMonitor(warmup=0, window=20)
    >>> stream = [{"title_length": 40.0 + i % 9, "missing_url": 0.0} for i in range(100)]
    >>> stream += [{"title_length": 4.0, "missing_url": 0.0}] * 30
    >>> [s.detail for x in stream for s in monitor.learn_one(x)]
    ['mean title length fell from 43.92 to 4.00']
    """

    def __init__(
        self,
        warmup: int = 200,
        cooldown: int = 200,
        window: int = 100,
        min_effect: float = 0.5,
        min_z: float = 5.0,
        delta: float = 0.002,
        clock: int = 16,
    ) -> None:
        self.warmup = warmup
        self.cooldown = cooldown
        self.window = window
        self.min_effect = min_effect
        self.min_z = min_z
        self.delta = delta
        self.clock = clock
        self._n = 0
        self._watches: dict[str, _Watch] = {}
        self._alarms = 0
        self._last_alarm: dict[str, Any] | None = None

    @property
    def n(self) -> int:
        """Observations learnt so far."""
        return self._n

    def _watch(self, quiet_until: int = 0) -> _Watch:
        return _Watch(drift.ADWIN(delta=self.delta, clock=self.clock), quiet_until=quiet_until)

    def learn_one(self, features: Mapping[str, float]) -> list[Shift]:
        """Learn one observation; return the shifts detected at it (usually empty).

        A feature absent from the observation, NaN or infinite, is not updated.
        """
        self._n += 1
        shifts = []
        for name in sorted(features):
            x = float(features[name])
            if math.isfinite(x):
                watch = self._watches.setdefault(name, self._watch())
                if (shift := self._learn_feature(name, watch, x)) is not None:
                    shifts.append(shift)
        return shifts

    def _learn_feature(self, name: str, watch: _Watch, x: float) -> Shift | None:
        watch.detector.update(_symlog(x))
        watch.push(x, self.window)
        if watch.detector.drift_detected:
            # ADWIN forgets its past once it fires. Remember the suspicion while the
            # window fills with the new regime.
            watch.suspect_until = self._n + self.window
        if self._n <= max(self.warmup, watch.quiet_until) or self._n > watch.suspect_until:
            return None
        if watch.blocks.n < 2:
            return None
        effect, z = watch.distance()
        if effect < self.min_effect or z < self.min_z:
            return None
        before = watch.reference_raw.get()
        after = watch.newest_regime()
        verb = "rose" if after > before else "fell"
        detail = f"{DESCRIPTIONS.get(name, f'mean {name}')} {verb} from {before:.2f} to {after:.2f}"
        self._watches[name] = self._watch(quiet_until=self._n + self.cooldown)
        self._alarms += 1
        self._last_alarm = {"index": self._n, "feature": name}
        return Shift(name, before, after, self._n, detail)

    def summary(self) -> dict[str, Any]:
        """JSON-able: observations, per-feature reference and recent means, alarms so far."""
        return {
            "observations": self._n,
            "alarms": self._alarms,
            "last_alarm": None if self._last_alarm is None else dict(self._last_alarm),
            "features": {
                name: {
                    "reference_mean": w.reference_raw.get() if w.reference_raw.n else None,
                    "reference_n": int(w.reference_raw.n),
                    "recent_mean": statistics.fmean(w.recent) if w.recent else None,
                    "recent_n": len(w.recent),
                }
                for name, w in sorted(self._watches.items())
            },
        }


@dataclass
class _Vocabulary:
    """A source's usual tags: those of its first tagged items, then those that recur."""

    items: int = 0
    usual: set = field(default_factory=set)
    sightings: dict = field(default_factory=dict)  # unusual tag -> items it was seen in

    def unusual_share(self, tags: list[str], first: int, usual_after: int) -> float | None:
        if not tags:
            return None
        self.items += 1
        if self.items <= first:
            self.usual.update(tags)
            return None
        unusual = [t for t in tags if t not in self.usual]
        for tag in unusual:
            if tag in self.sightings or len(self.sightings) < MAX_TAGS:
                self.sightings[tag] = self.sightings.get(tag, 0) + 1
                if self.sightings[tag] >= usual_after and len(self.usual) < MAX_TAGS:
                    self.usual.add(tag)
                    del self.sightings[tag]
        return len(unusual) / len(tags)


class SourceShapeMonitor(base.Base):
    """One :class:`ShapeMonitor` per source for scraped items (keyed by source, else domain).

    An item is learnt as its :func:`item_features`, without ``title_length`` when the title
    is missing (``missing_title`` counts that), plus ``new_tag_share``: the share of its tags
    unusual for the source. Usual tags are those of the source's first ``vocabulary_items``
    tagged items, plus any tag seen in ``usual_after`` later items. After a tag-mix alarm the
    vocabulary is built again from the new regime.

    Parameters
    ----------
    monitor
        The :class:`ShapeMonitor` cloned for each source (default: ``ShapeMonitor()``).
    vocabulary_items, usual_after
        How a source's usual tags are learnt, as above.

    >>> monitor = SourceShapeMonitor(ShapeMonitor(warmup=0, window=20), vocabulary_items=20)
    >>> items = [{"source": "s", "title": "Call", "tags": ["oil", "ink"]}] * 80
    >>> items += [{"source": "s", "title": "Call", "tags": [f"a{i % 9}", f"b{i % 7}"]} for i in range(40)]
    >>> [(s.index, s.detail) for i in items for s in monitor.learn_item(i)]
    [(100, 'share of tags unusual for the source rose from 0.00 to 1.00')]
    """

    def __init__(
        self, monitor: ShapeMonitor | None = None, vocabulary_items: int = 100, usual_after: int = 20
    ) -> None:
        self.monitor = monitor
        self.vocabulary_items = vocabulary_items
        self.usual_after = usual_after
        self._monitors: dict[str, ShapeMonitor] = {}
        self._vocabularies: dict[str, _Vocabulary] = {}

    def learn_item(self, item: Mapping[str, Any]) -> list[Shift]:
        """Learn one scraped item; return the shifts of its source detected at it."""
        source = str(item.get("source") or item.get("domain") or "")
        if source not in self._monitors:
            prototype = self.monitor if self.monitor is not None else ShapeMonitor()
            self._monitors[source] = prototype.clone()
            self._vocabularies[source] = _Vocabulary()
        features = item_features(item)
        if features["missing_title"]:
            del features["title_length"]
        share = self._vocabularies[source].unusual_share(_tags(item), self.vocabulary_items, self.usual_after)
        if share is not None:
            features["new_tag_share"] = share
        shifts = self._monitors[source].learn_one(features)
        if any(s.feature == "new_tag_share" for s in shifts):
            self._vocabularies[source] = _Vocabulary()
        return shifts

    def summary(self) -> dict[str, Any]:
        """JSON-able: per source, its :meth:`ShapeMonitor.summary` and its number of usual tags."""
        return {
            source: {**monitor.summary(), "usual_tags": len(self._vocabularies[source].usual)}
            for source, monitor in sorted(self._monitors.items())
        }
