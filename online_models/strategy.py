"""Which scraping strategy a domain's scrapers should use, learned from every attempt.

A :class:`DomainSelector` watches one domain. For each strategy tried there it keeps the
recent attempts (rolling success rate, consecutive failures, error bursts), a discounted
Beta posterior of its success rate (recent evidence weighs more), event-time buckets for
the last hour and day, recent latencies and a fast/slow trend. It decides:

* **hard triggers** — the strategy in use fails ``consecutive_failures`` times in a row,
  its rolling success rate falls below ``rate_threshold``, or one error type bursts. The
  strategy is then *tripped*: its evidence from before the break no longer describes it,
  so it is judged again only after ``recovery_successes`` successes in a row (scrapers
  keep exploring a little, so a recovered strategy is noticed);
* **periodic re-evaluation** — every ``reevaluate_every`` attempts, move to another
  strategy whose posterior is better by at least ``min_gain`` with probability at least
  ``confidence`` (a normal approximation of the two Betas, so decisions are deterministic
  and a replay of the log makes the same ones).

A switch is only made to a strategy that is not tripped; when none is left the selector
stays put and raises a single alarm until a strategy works again. Pinning (an operator's
override) and per-domain disabling stop every automatic decision; statistics go on.

The selector's whole state is a JSON-able dict (:meth:`DomainSelector.to_state`), so the
worker can store it beside the read model and resume exactly where it stopped.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Alarm", "Decision", "DomainSelector", "SelectorConfig", "event_slug"]

BUCKET_S = 600  # event-time bucket of the hour/day windows
HOUR_S, DAY_S = 3600, 86400


@dataclass(frozen=True)
class SelectorConfig:
    """Rules and thresholds; ``None`` switches a rule off.

    Parameters
    ----------
    window
        Recent attempts per strategy behind the rolling success rate.
    min_attempts
        Attempts in the window before the rate rule may fire.
    rate_threshold
        Trip a strategy whose rolling success rate is below this.
    consecutive_failures
        Trip a strategy after this many failures in a row.
    error_burst
        Trip a strategy when this many of its last ``error_burst_window`` attempts failed
        with one and the same error type.
    reevaluate_every
        Attempts on a domain between two re-evaluations of the choice.
    confidence, min_gain
        A re-evaluation switches only to a strategy better by ``min_gain`` with this
        probability.
    min_evidence
        Effective observations a strategy needs before a re-evaluation may pick it.
    recovery_successes
        Successes in a row that bring a tripped strategy back.
    discount
        Weight kept by past evidence at each new observation of a strategy.
    explore_rate
        Share of attempts scrapers spend on other strategies (sent to them in switches).
    automation
        ``False`` keeps statistics but never switches (a per-domain opt-out).

    """

    window: int = 50
    min_attempts: int = 10
    rate_threshold: float | None = 0.10
    consecutive_failures: int | None = 5
    error_burst: int | None = 6
    error_burst_window: int = 10
    reevaluate_every: int | None = 50
    confidence: float = 0.95
    min_gain: float = 0.05
    min_evidence: float = 10.0
    recovery_successes: int = 3
    discount: float = 0.99
    explore_rate: float = 0.05
    latency_window: int = 200
    automation: bool = True


@dataclass(frozen=True)
class Decision:
    """The domain's scrapers should move from one strategy to another."""

    domain: str
    from_strategy: str | None
    to_strategy: str
    trigger: str  # consecutive_failures, low_success_rate, error_burst, reevaluation, pinned
    reason: str
    params: dict[str, Any]
    decision_id: str
    ts: float


@dataclass(frozen=True)
class Alarm:
    """Something a person should know: no strategy works on a domain, or one works again."""

    domain: str
    kind: str  # no_working_strategy, strategy_recovered
    detail: str
    severity: str
    ts: float


@dataclass
class _Arm:
    """What is known of one strategy on one domain."""

    recent: deque = field(default_factory=deque)  # "" for a success, else the error type
    alpha: float = 1.0
    beta: float = 1.0
    attempts: int = 0
    successes: int = 0
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    buckets: dict[int, list[int]] = field(default_factory=dict)  # bucket -> [attempts, successes]
    latencies: deque = field(default_factory=deque)
    fast: float | None = None
    slow: float | None = None
    items_found: int = 0
    tripped: str | None = None  # why, while tripped
    trip: str = ""  # what tripped it: consecutive_failures, low_success_rate or error_burst
    saved: tuple[float, float] | None = None  # the posterior from before the trip
    last_ts: float = 0.0

    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def evidence(self) -> float:
        return self.alpha + self.beta - 2.0

    def rate(self) -> float | None:
        return None if not self.recent else sum(1 for e in self.recent if not e) / len(self.recent)

    def window_rate(self, since: float) -> tuple[int, float | None]:
        n = s = 0
        first = int(since // BUCKET_S)
        for bucket, (a, ok) in self.buckets.items():
            if bucket >= first:
                n, s = n + a, s + ok
        return n, (s / n if n else None)

    def latency_quantiles(self) -> dict[str, float] | None:
        n = len(self.latencies)
        if n < 2:
            return None
        ordered = sorted(self.latencies)

        def at(q: float) -> float:  # linear interpolation, like statistics.quantiles "inclusive"
            pos = q * (n - 1)
            low = int(pos)
            high = min(low + 1, n - 1)
            return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)

        return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99)}

    def to_state(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("recent", "latencies", "buckets")}
        state["recent"] = list(self.recent)
        state["latencies"] = list(self.latencies)
        state["buckets"] = {str(b): v for b, v in self.buckets.items()}
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], config: SelectorConfig) -> _Arm:
        arm = cls(**{k: v for k, v in state.items() if k not in ("recent", "latencies", "buckets")})
        arm.recent = deque(state.get("recent", ()), maxlen=max(config.window, config.error_burst_window))
        arm.latencies = deque(state.get("latencies", ()), maxlen=config.latency_window)
        arm.buckets = {int(b): list(v) for b, v in state.get("buckets", {}).items()}
        arm.saved = None if arm.saved is None else tuple(arm.saved)
        return arm


def event_slug(domain: str) -> str:
    """A domain as an id-safe string (ids allow fewer characters than domain labels)."""
    slug = re.sub(r"[^A-Za-z0-9_.\-]", "_", domain)[:150]
    if slug != domain:  # keep two domains that slug alike apart
        slug += "-" + hashlib.sha1(domain.encode()).hexdigest()[:8]
    return slug


def _prob_better(a: _Arm, b: _Arm) -> float:
    """P(a's success rate > b's) under a normal approximation of their Beta posteriors."""
    var = sum(x.alpha * x.beta / ((x.alpha + x.beta) ** 2 * (x.alpha + x.beta + 1)) for x in (a, b))
    z = (a.mean() - b.mean()) / math.sqrt(var)
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


class DomainSelector:
    """Chooses the scraping strategy of one domain; see the module docstring.

    Parameters
    ----------
    domain
        The domain this selector decides for.
    config
        Rules and thresholds (defaults: :class:`SelectorConfig`).
    strategies
        Strategies known to exist beyond those seen in attempts (switch targets).

    Examples
    --------
    >>> sel = DomainSelector("example.org", strategies=["requests", "playwright"])
    >>> for i in range(20):
    ...     _ = sel.observe("requests", True, ts=float(i))
    >>> sel.current
    'requests'
    >>> out = [sel.observe("requests", False, ts=20.0 + i, error_type="captcha") for i in range(5)]
    >>> [d.to_strategy for step in out for d in step if isinstance(d, Decision)]
    ['playwright']
    >>> out[-1][0].reason
    "5 consecutive failures of 'requests' (last error: captcha)"

    """

    def __init__(
        self, domain: str, config: SelectorConfig | None = None, strategies: Iterable[str] = ()
    ) -> None:
        self.domain = domain
        self.config = config or SelectorConfig()
        self.arms: dict[str, _Arm] = {}
        self.current: str | None = None
        self.reason = ""
        self.trigger = ""
        self.since = 0.0
        self.pinned: str | None = None
        self.attempts = 0
        self.seq = 0  # decisions made so far: makes decision ids deterministic
        self.no_working = False
        self.last_ts = 0.0
        self.switches: list[list[Any]] = []  # recent [ts, from, to, trigger, decision_id]
        for name in strategies:
            self._arm(name)

    # --- learning -------------------------------------------------------------------------

    def _arm(self, name: str) -> _Arm:
        arm = self.arms.get(name)
        if arm is None:
            cfg = self.config
            arm = self.arms[name] = _Arm(
                recent=deque(maxlen=max(cfg.window, cfg.error_burst_window)),
                latencies=deque(maxlen=cfg.latency_window),
            )
        return arm

    def add_strategies(self, names: Iterable[str]) -> None:
        """Make strategies known as switch targets before any attempt used them."""
        for name in names:
            self._arm(name)

    def observe(
        self,
        strategy: str,
        success: bool,
        ts: float,
        *,
        latency_ms: float | None = None,
        error_type: str | None = None,
        items_found: int | None = None,
    ) -> list[Decision | Alarm]:
        """Learn one attempt; return the decisions and alarms it leads to (usually none)."""
        cfg = self.config
        arm = self._arm(strategy)
        self.attempts += 1
        self.last_ts = max(self.last_ts, ts)
        arm.last_ts = max(arm.last_ts, ts)
        arm.attempts += 1
        outcome = "" if success else (error_type or "unknown")
        arm.recent.append(outcome)
        x = 1.0 if success else 0.0
        arm.alpha = cfg.discount * (arm.alpha - 1.0) + 1.0 + x
        arm.beta = cfg.discount * (arm.beta - 1.0) + 1.0 + (1.0 - x)
        arm.fast = x if arm.fast is None else arm.fast + 0.2 * (x - arm.fast)
        arm.slow = x if arm.slow is None else arm.slow + 0.02 * (x - arm.slow)
        key = int(ts // BUCKET_S)
        bucket = arm.buckets.get(key)
        if bucket is None:  # a new bucket: the oldest may have left the day
            bucket = arm.buckets[key] = [0, 0]
            horizon = int((self.last_ts - DAY_S) // BUCKET_S)
            for old in [b for b in arm.buckets if b < horizon]:
                del arm.buckets[old]
        bucket[0] += 1
        if success:
            arm.successes += 1
            bucket[1] += 1
            arm.consecutive_failures = 0
            arm.consecutive_successes += 1
            if items_found is not None:
                arm.items_found += items_found
        else:
            arm.consecutive_successes = 0
            arm.consecutive_failures += 1
            arm.errors[outcome] = arm.errors.get(outcome, 0) + 1
        if latency_ms is not None and success:
            # Quantiles of attempts that worked: what a timeout must allow for (a failure's
            # latency is often the old timeout itself).
            arm.latencies.append(float(latency_ms))

        out: list[Decision | Alarm] = []
        if self.current is None:
            # The strategy scrapers use before Eddy has said anything is the starting choice.
            self.current, self.since, self.trigger = strategy, ts, "observed"
            self.reason = f"{strategy!r} was the first strategy seen on {self.domain}"
        if arm.tripped is None and not success:  # only a failure can trip a strategy
            found = self._trip_reason(strategy, arm)
            if found is not None:
                arm.trip, arm.tripped = found
                # While broken, only evidence from the break counts; what the strategy was
                # worth before is kept for when it works again (a blocked IP is lifted, a
                # fixed parser ships): it then competes at its old rate at once.
                arm.saved = (arm.alpha, arm.beta)
                arm.alpha, arm.beta = 1.0, 1.0 + min(arm.consecutive_failures, 5)
        elif arm.tripped is not None and success and arm.consecutive_successes >= cfg.recovery_successes:
            arm.tripped = None
            if arm.saved is not None:
                arm.alpha, arm.beta = arm.saved[0] + arm.consecutive_successes, arm.saved[1]
                arm.saved = None
            arm.recent.clear()
            arm.recent.extend([""] * arm.consecutive_successes)
            if self.no_working:
                self.no_working = False
                out.append(Alarm(self.domain, "strategy_recovered",
                                 f"{strategy!r} works again on {self.domain}", "info", ts))
        if not self.automatic:
            return out
        current = self.arms[self.current]
        if strategy == self.current and arm.tripped is not None:
            target = self._best(exclude=self.current) or self._least_broken(current)
            if target is not None:
                out.append(self._switch(target, arm.trip or "low_success_rate", arm.tripped, ts))
            elif not self.no_working:
                self.no_working = True
                detail = f"no working strategy left on {self.domain}: {self.current!r} {arm.tripped}"
                tripped = {n: a.tripped for n, a in self.arms.items() if a.tripped and n != self.current}
                if tripped:
                    detail += "; " + "; ".join(f"{n!r} {why}" for n, why in sorted(tripped.items()))
                out.append(Alarm(self.domain, "no_working_strategy", detail, "critical", ts))
        elif cfg.reevaluate_every and self.attempts % cfg.reevaluate_every == 0:
            target = self._best(exclude=self.current)
            if target is not None and (current.tripped is not None or self._clearly_better(target, current)):
                better = self.arms[target]
                why = (f"re-evaluation: {target!r} succeeds {better.mean():.0%} vs {current.mean():.0%} "
                       f"for {self.current!r}")
                out.append(self._switch(target, "reevaluation", why, ts))
        return out

    def _trip_reason(self, name: str, arm: _Arm) -> tuple[str, str] | None:
        """(trigger, reason) when the strategy's latest attempts trip it, else None."""
        cfg = self.config
        if cfg.consecutive_failures and arm.consecutive_failures >= cfg.consecutive_failures:
            last = arm.recent[-1] if arm.recent else "unknown"
            return "consecutive_failures", f"{arm.consecutive_failures} consecutive failures of {name!r} (last error: {last})"
        window = list(arm.recent)[-cfg.window :]
        if cfg.rate_threshold is not None and len(window) >= cfg.min_attempts:
            rate = sum(1 for e in window if not e) / len(window)
            if rate < cfg.rate_threshold:
                return "low_success_rate", (f"success rate of {name!r} fell to {rate:.0%} over its last "
                                            f"{len(window)} attempts (threshold {cfg.rate_threshold:.0%})")
        if cfg.error_burst:
            burst = list(arm.recent)[-cfg.error_burst_window :]
            counts: dict[str, int] = {}
            for e in burst:
                if e:
                    counts[e] = counts.get(e, 0) + 1
            if counts:
                error, n = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
                if n >= cfg.error_burst:
                    return "error_burst", f"burst of {error!r} errors on {name!r}: {n} of its last {len(burst)} attempts"
        return None

    def _best(self, exclude: str | None) -> str | None:
        """The untripped strategy with the best posterior mean (ties: by name)."""
        candidates = sorted((-a.mean(), n) for n, a in self.arms.items() if n != exclude and a.tripped is None)
        return candidates[0][1] if candidates else None

    def _least_broken(self, current: _Arm) -> str | None:
        """When every other strategy broke too: the one doing clearly best since it broke,
        if it still clears the rate threshold (a poor strategy beats a blocked one)."""
        cfg = self.config
        floor = max(cfg.rate_threshold or 0.0, current.mean() + cfg.min_gain)
        # alpha > 1.5: it has succeeded since it broke (a tripped strategy restarts at alpha 1).
        others = sorted((-a.mean(), n) for n, a in self.arms.items()
                        if n != self.current and a.alpha > 1.5 and a.mean() >= floor)
        return others[0][1] if others else None

    def _clearly_better(self, name: str, current: _Arm) -> bool:
        cfg, arm = self.config, self.arms[name]
        return (
            arm.evidence() >= cfg.min_evidence
            and arm.mean() - current.mean() >= cfg.min_gain
            and _prob_better(arm, current) >= cfg.confidence
        )

    def _switch(self, target: str, trigger: str, reason: str, ts: float) -> Decision:
        self.seq += 1
        decision = Decision(
            domain=self.domain,
            from_strategy=self.current,
            to_strategy=target,
            trigger=trigger,
            reason=reason,
            params=self.params(target),
            decision_id=f"{event_slug(self.domain)}:{self.seq}",
            ts=ts,
        )
        self.current, self.reason, self.trigger, self.since = target, reason, trigger, ts
        self.switches.append([ts, decision.from_strategy, target, trigger, decision.decision_id])
        del self.switches[:-50]
        return decision

    # --- operator overrides ---------------------------------------------------------------

    @property
    def automatic(self) -> bool:
        return self.config.automation and self.pinned is None and self.current is not None

    def pin(self, strategy: str, ts: float, by: str = "operator") -> Decision | None:
        """Hold the domain on ``strategy`` until :meth:`unpin`; a switch if it changes the choice."""
        self._arm(strategy)
        self.pinned = strategy
        if self.current == strategy:
            self.reason, self.trigger = f"pinned by {by}", "pinned"
            return None
        return self._switch(strategy, "pinned", f"pinned by {by}", ts)

    def unpin(self) -> None:
        """Give the choice back to the automation (the next re-evaluation may move it)."""
        self.pinned = None

    # --- reads ----------------------------------------------------------------------------

    def params(self, strategy: str) -> dict[str, Any]:
        """Suggested scraper settings for a strategy, from what its attempts showed."""
        arm = self.arms.get(strategy)
        q = arm.latency_quantiles() if arm else None
        timeout = 30_000.0 if q is None else min(max(2.0 * q["p99"], 1_000.0), 120_000.0)
        rate = arm.mean() if arm else 0.5
        return {
            "timeout_ms": round(timeout, 1),
            "retries": 1 if rate >= 0.9 else 2 if rate >= 0.6 else 3,
            "explore_rate": self.config.explore_rate,
            "strategies": sorted(self.arms),
        }

    def stats(self) -> dict[str, Any]:
        """JSON-able statistics of every strategy, at the domain's latest event time."""
        now = self.last_ts
        out = {}
        for name, arm in sorted(self.arms.items()):
            hour_n, hour_rate = arm.window_rate(now - HOUR_S)
            day_n, day_rate = arm.window_rate(now - DAY_S)
            trend = None if arm.fast is None else arm.fast - arm.slow
            out[name] = {
                "attempts": arm.attempts,
                "successes": arm.successes,
                "success_rate": arm.successes / arm.attempts if arm.attempts else None,
                "recent_success_rate": arm.rate(),
                "recent_attempts": len(arm.recent),
                "last_hour": {"attempts": hour_n, "success_rate": hour_rate},
                "last_day": {"attempts": day_n, "success_rate": day_rate},
                "posterior_mean": round(arm.mean(), 4),
                "consecutive_failures": arm.consecutive_failures,
                "errors": dict(sorted(arm.errors.items())),
                "latency_ms": arm.latency_quantiles(),
                "items_found": arm.items_found,
                "trend": None if trend is None else round(trend, 4),
                "trend_label": (None if trend is None else "falling" if trend < -0.1
                                else "rising" if trend > 0.1 else "steady"),
                "tripped": arm.tripped,
                "last_ts": arm.last_ts or None,
            }
        return out

    def view(self, stats: dict[str, Any] | None = None) -> dict[str, Any]:
        """The read model of the domain: current choice, why, and per-strategy statistics
        (pass :meth:`stats` when already computed)."""
        return {
            "domain": self.domain,
            "current": self.current,
            "reason": self.reason,
            "trigger": self.trigger,
            "since": self.since or None,
            "pinned": self.pinned,
            "automation": self.config.automation,
            "no_working_strategy": self.no_working,
            "attempts": self.attempts,
            "params": self.params(self.current) if self.current else None,
            "switches": [
                {"ts": s[0], "from": s[1], "to": s[2], "trigger": s[3], "decision_id": s[4]} for s in self.switches
            ],
            "strategies": self.stats() if stats is None else stats,
            "updated_at": self.last_ts or None,
        }

    # --- persistence ----------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything needed to resume, as plain JSON types."""
        return {
            "domain": self.domain,
            "arms": {n: a.to_state() for n, a in self.arms.items()},
            "current": self.current,
            "reason": self.reason,
            "trigger": self.trigger,
            "since": self.since,
            "pinned": self.pinned,
            "attempts": self.attempts,
            "seq": self.seq,
            "no_working": self.no_working,
            "last_ts": self.last_ts,
            "switches": self.switches,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: SelectorConfig | None = None) -> DomainSelector:
        sel = cls(state["domain"], config)
        sel.arms = {n: _Arm.from_state(a, sel.config) for n, a in state["arms"].items()}
        for name in ("current", "reason", "trigger", "since", "pinned", "attempts", "seq", "no_working",
                     "last_ts", "switches"):
            setattr(sel, name, state[name])
        return sel
