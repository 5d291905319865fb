"""Win probability of a bid, scored when it is placed and learned when its outcome lands.

:class:`BidFeaturizer` turns a bid into features from what was known when it was placed:
the job (words of its title and text, its budget, how long it has been posted, how many
bids it already drew and how this amount compares with theirs), the bid (amount, effort
put into its text, hour), the profile (skills, their overlap with the job's skills,
experience) and the profile's own history — win rates and bid counts over several
windows, learned only from earlier outcomes. :class:`WinModel` is a River logistic
regression on those features. Outcomes come days later: the caller keeps each bid's
features until its outcome arrives and teaches the model exactly what it scored with.

:class:`BidScores` is progressive validation: every outcome is scored with the
probability given when the bid was placed (before anything was learned from it), for the
model and for the baseline — the profile's own smoothed win rate — cumulatively and over
a rolling window.
"""

from __future__ import annotations

import bisect
import heapq
import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from river import linear_model, metrics, optim, utils

__all__ = ["BidFeaturizer", "BidScores", "JobStats", "ProfileHistory", "WinModel", "words"]

DAY = 86400.0
_WORD = re.compile(r"[a-z0-9][a-z0-9+#\-]*[a-z0-9+#]|[a-z0-9]")
_STOP = frozenset(["the", "and", "for", "with", "our", "you", "your", "are", "this", "that", "from", "have", "will", "can", "all", "any", "who", "a", "an", "of", "to", "in", "on"])
PRIOR_WINS, PRIOR_BIDS = 1.0, 3.0  # a profile with no history starts at a win rate of 1/3


def words(text: str | None) -> set[str]:
    """Lower-case words of a text, without stop words.

    >>> sorted(words("Need a React-Native dev; Python, SQL."))
    ['dev', 'need', 'python', 'react-native', 'sql']
    """
    return {w for w in _WORD.findall((text or "").lower()) if w not in _STOP}


class ProfileHistory:
    """A freelancer's past bids and outcomes (event times), as far as this worker saw them.

    The most recent ``keep`` of each are kept, in time order, so windows are a bisection.
    """

    def __init__(self, keep: int = 200) -> None:
        self.keep = keep
        self.bids: list[float] = []  # placement times
        self.outcome_ts: list[float] = []
        self.outcome_won: list[int] = []

    def _add(self, times: list[float], ts: float) -> int:
        at = bisect.bisect_right(times, ts)  # outcomes and bids arrive nearly in time order
        times.insert(at, ts)
        return at

    def add_bid(self, ts: float) -> None:
        self._add(self.bids, ts)
        del self.bids[: -self.keep]

    def add_outcome(self, ts: float, won: bool) -> None:
        self.outcome_won.insert(self._add(self.outcome_ts, ts), int(won))
        del self.outcome_ts[: -self.keep], self.outcome_won[: -self.keep]

    def win_rate(self, now: float, window: float | None = None, last: int | None = None) -> tuple[int, float]:
        """Outcomes counted and the smoothed win rate, over a time window or the last few."""
        first = 0 if window is None else bisect.bisect_left(self.outcome_ts, now - window)
        if last is not None:
            first = max(first, len(self.outcome_won) - last)
        n = len(self.outcome_won) - first
        return n, (sum(self.outcome_won[first:]) + PRIOR_WINS) / (n + PRIOR_BIDS)

    def bid_count(self, now: float, window: float) -> int:
        return len(self.bids) - bisect.bisect_left(self.bids, now - window)

    def to_state(self) -> dict[str, Any]:
        return {"bids": self.bids, "outcomes": [[t, w] for t, w in zip(self.outcome_ts, self.outcome_won)]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ProfileHistory:
        history = cls()
        for ts in state.get("bids", ()):
            history.add_bid(ts)
        for ts, won in state.get("outcomes", ()):
            history.add_outcome(ts, bool(won))
        return history


@dataclass
class JobStats:
    """The bids a job drew so far: how many, their mean log amount, when the first came."""

    n: int = 0
    log_amount_sum: float = 0.0
    first_ts: float | None = None

    def to_state(self) -> dict[str, Any]:
        return {"n": self.n, "log_amount_sum": self.log_amount_sum, "first_ts": self.first_ts}


class BidFeaturizer:
    """Bid -> features, from the job, the bid, the profile and the profile's history.

    Parameters
    ----------
    max_profiles, max_jobs
        How many profile histories and job statistics are remembered (least recently used
        are forgotten), so memory stays bounded however long the stream.
    word_weight
        Value of each job word feature, divided by the square root of the job's word count.

    Examples
    --------
    >>> f = BidFeaturizer()
    >>> bid = {"profile_id": "p1", "job_id": "j1", "job_title": "Python scraper", "job_budget": 100.0,
    ...        "job_text": "Skills: python, sql.", "amount": 80.0, "bid_text": "I can do it.",
    ...        "profile": {"skills": ["python", "figma"], "experience": 3.0}}
    >>> x = f.learn_bid(bid, ts=0.0)
    >>> x["skill_coverage"], x["skill_overlap"], round(x["amount_vs_budget"], 3)
    (1.0, 1.0, -0.223)
    >>> f.learn_outcome("p1", True, ts=DAY)
    >>> round(f.learn_bid(dict(bid, job_id="j2"), ts=2 * DAY)["profile_win_rate"], 3)
    0.5

    """

    def __init__(self, max_profiles: int = 100_000, max_jobs: int = 100_000, word_weight: float = 0.5) -> None:
        self.max_profiles = max_profiles
        self.max_jobs = max_jobs
        self.word_weight = word_weight
        self.skills: set[str] = set()  # every skill a profile declared: what "a skill" is
        self.profiles: OrderedDict[str, ProfileHistory] = OrderedDict()
        self.jobs: OrderedDict[str, JobStats] = OrderedDict()

    def _lru(self, table: OrderedDict, key: str, factory: Any, limit: int) -> Any:
        value = table.get(key)
        if value is None:
            value = table[key] = factory()
            if len(table) > limit:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        return value

    def features(
        self, bid: Mapping[str, Any], ts: float, profile: ProfileHistory | None = None, job: JobStats | None = None,
        skills: set[str] | None = None,
    ) -> dict[str, float]:
        """The features of a bid at ``ts``; reads state only (histories may be passed in)."""
        profile = profile if profile is not None else self.profiles.get(str(bid.get("profile_id")), ProfileHistory())
        job = job if job is not None else self.jobs.get(str(bid.get("job_id")), JobStats())
        skills = self.skills if skills is None else skills
        job_words = words(f"{bid.get('job_title') or ''} {bid.get('job_text') or ''}")
        info = bid.get("profile") or {}
        own = {s.lower() for s in info.get("skills", ())}
        needed = job_words & (skills | own)
        overlap = own & job_words
        amount = max(float(bid.get("amount") or 0.0), 1.0)
        budget = bid.get("job_budget")
        bid_words = len((bid.get("bid_text") or "").split())
        posted = bid.get("job_posted_at")
        since_posted = ts - posted if posted is not None else (ts - job.first_ts if job.first_ts is not None else 0.0)
        hour = (ts % DAY) / DAY * 2 * math.pi
        n_all, rate_all = profile.win_rate(ts)
        _, rate_30d = profile.win_rate(ts, window=30 * DAY)
        _, rate_last10 = profile.win_rate(ts, last=10)
        x = {
            "skill_coverage": len(overlap) / len(needed) if needed else 0.0,
            "skill_overlap": float(len(overlap)),
            "no_skills_needed": float(not needed),
            "log_amount": math.log(amount) - 6.0,
            "amount_vs_budget": math.log(amount / budget) if budget else 0.0,
            "no_budget": float(not budget),
            "amount_vs_other_bids": math.log(amount) - job.log_amount_sum / job.n if job.n else 0.0,
            "other_bids": math.log1p(job.n),
            "hours_since_posted": math.log1p(max(0.0, since_posted) / 3600.0),
            "effort": min(bid_words, 80) / 80,
            "experience": math.log1p(max(0.0, float(info.get("experience") or 0.0))),
            "hour_sin": math.sin(hour),
            "hour_cos": math.cos(hour),
            "profile_win_rate": rate_all,
            "profile_win_rate_30d": rate_30d,
            "profile_win_rate_last10": rate_last10,
            "profile_outcomes": math.log1p(n_all),
            "profile_bids_1d": math.log1p(profile.bid_count(ts, DAY)),
            "profile_bids_7d": math.log1p(profile.bid_count(ts, 7 * DAY)),
            "profile_bids_30d": math.log1p(profile.bid_count(ts, 30 * DAY)),
        }
        if job_words and self.word_weight:
            w = self.word_weight / math.sqrt(len(job_words))
            for word in job_words:
                x[f"job:{word}"] = w
        for skill in overlap:
            x[f"match:{skill}"] = 1.0
        return x

    def learn_bid(self, bid: Mapping[str, Any], ts: float) -> dict[str, float]:
        """The bid's features as of now, then remember the bid (job stats, profile history)."""
        info = bid.get("profile") or {}
        self.skills.update(s.lower() for s in info.get("skills", ()))
        x = self.features(bid, ts)
        profile = self._lru(self.profiles, str(bid.get("profile_id")), ProfileHistory, self.max_profiles)
        profile.add_bid(ts)
        if bid.get("job_id") is not None:
            job = self._lru(self.jobs, str(bid["job_id"]), JobStats, self.max_jobs)
            job.n += 1
            job.log_amount_sum += math.log(max(float(bid.get("amount") or 0.0), 1.0))
            job.first_ts = ts if job.first_ts is None else min(job.first_ts, ts)
        return x

    def learn_outcome(self, profile_id: str, won: bool, ts: float) -> None:
        self._lru(self.profiles, profile_id, ProfileHistory, self.max_profiles).add_outcome(ts, won)

    def baseline(self, profile_id: str, ts: float) -> float:
        """The baseline's win probability: the profile's smoothed historical win rate."""
        profile = self.profiles.get(profile_id)
        return profile.win_rate(ts)[1] if profile is not None else PRIOR_WINS / PRIOR_BIDS


class WinModel:
    """Online logistic regression (River) on :class:`BidFeaturizer` features.

    AdaGrad gives every feature its own step size: word and skill indicators that show up
    rarely keep learning while the dense features settle (plain SGD on the simulator lost
    0.04-0.09 ROC AUC to it).

    Parameters
    ----------
    lr
        Learning rate of the AdaGrad optimizer.
    l2
        L2 penalty on the weights.

    Examples
    --------
    >>> model = WinModel()
    >>> for _ in range(200):
    ...     model.learn_one({"skill_coverage": 1.0}, True)
    ...     model.learn_one({"skill_coverage": 0.0}, False)
    >>> model.predict_one({"skill_coverage": 1.0}) > 0.7 > 0.3 > model.predict_one({"skill_coverage": 0.0})
    True
    >>> model.learned
    400

    """

    version = "1"

    def __init__(self, lr: float = 0.1, l2: float = 1e-5) -> None:
        self.lr = lr
        self.l2 = l2
        self.model = linear_model.LogisticRegression(optimizer=optim.AdaGrad(lr), l2=l2, intercept_lr=0.05)
        self.learned = 0

    def predict_one(self, x: Mapping[str, float]) -> float:
        return float(self.model.predict_proba_one(dict(x)).get(True, 0.5))

    def learn_one(self, x: Mapping[str, float], won: bool) -> None:
        self.model.learn_one(dict(x), bool(won))
        self.learned += 1

    def top_weights(self, n: int = 15) -> list[tuple[str, float]]:
        # A partial sort: the weights run to thousands of words and this is read every batch.
        weights = heapq.nsmallest(n, self.model.weights.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
        return [(name, round(w, 4)) for name, w in weights]

    def snapshot(self) -> dict[str, Any]:
        """Weights and intercept, JSON-able: enough to score (not to keep learning)."""
        return {"version": self.version, "learned": self.learned, "intercept": self.model.intercept,
                "weights": dict(self.model.weights)}

    @staticmethod
    def score_with(snapshot: Mapping[str, Any], x: Mapping[str, float]) -> float:
        """The probability a :meth:`snapshot` gives: what the API uses for draft bids."""
        weights = snapshot["weights"]
        z = snapshot["intercept"] + sum(weights.get(f, 0.0) * v for f, v in x.items())
        z = max(-50.0, min(50.0, z))
        return 1.0 / (1.0 + math.exp(-z))


class BidScores:
    """Progressive validation of win probabilities, cumulative and over a rolling window.

    Examples
    --------
    >>> s = BidScores(window=4)
    >>> for y, p in [(True, 0.9), (False, 0.2), (True, 0.6), (False, 0.7)]:
    ...     s.update(y, p)
    >>> s.report()["cumulative"]["confusion"]
    {'tp': 2, 'fp': 1, 'tn': 1, 'fn': 0}

    """

    def __init__(self, window: int = 1000, threshold: float = 0.5) -> None:
        self.window = window
        self.threshold = threshold
        self.n = 0
        self.auc = metrics.ROCAUC(n_thresholds=200)
        self.rolling_auc = metrics.RollingROCAUC(window_size=window)
        self.logloss = metrics.LogLoss()
        self.rolling_logloss = utils.Rolling(metrics.LogLoss, window_size=window)
        self.cm = metrics.ConfusionMatrix()
        self.rolling_cm = utils.Rolling(metrics.ConfusionMatrix, window_size=window)

    def update(self, won: bool, p: float) -> None:
        y, guess = bool(won), p >= self.threshold
        self.n += 1
        self.auc.update(y, p)
        self.rolling_auc.update(y, p)
        self.logloss.update(y, p)
        self.rolling_logloss.update(y, p)
        self.cm.update(y, guess)
        self.rolling_cm.update(y, guess)

    @staticmethod
    def _classification(cm: Any) -> dict[str, Any]:
        tp, fp = cm[True][True], cm[False][True]
        tn, fn = cm[False][False], cm[True][False]
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / (tp + fn) if tp + fn else None
        f1 = 2 * precision * recall / (precision + recall) if precision and recall else None
        return {"precision": precision, "recall": recall, "f1": f1,
                "confusion": {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}}

    def report(self) -> dict[str, Any]:
        """JSON-able figures (River returns numpy floats for some)."""
        return {
            "outcomes": self.n,
            "cumulative": {"roc_auc": float(self.auc.get()) if self.n else None,
                           "log_loss": float(self.logloss.get()) if self.n else None,
                           **self._classification(self.cm)},
            "rolling": {"window": self.window,
                        "roc_auc": float(self.rolling_auc.get()) if self.n else None,
                        "log_loss": float(self.rolling_logloss.get()) if self.n else None,
                        **self._classification(self.rolling_cm.obj if hasattr(self.rolling_cm, "obj") else
                                               self.rolling_cm)},
        }
