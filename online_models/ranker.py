"""The learned blend: a linear ranker over candidate features, trained online per choice.

Every candidate item is a row of features (collaborative, sequence, content, trending at
several half-lives, freshness, declared interests...). The score is ``w · x`` with weights
that depend on the user's segment (new, short or long history) plus the item's segment
(new or known), so a stream can teach that a new user follows what trends while a known
one follows what co-occurs with their history, and that a brand-new item is judged on its
content alone.

Learning is a multinomial-logit step per positive: the item the user chose against the
candidates they did not (the pool ranked for them just before, which holds shown-but-skipped
items where impressions exist): the gradient of ``-log softmax(w · x)[chosen]``, applied by
River's AdaGrad optimiser so that each weight adapts its own step size. Weights start at a
prior that makes a tiny world behave sensibly (content and collaboration count, trends a
little) and move to what the stream rewards.

>>> import numpy as np
>>> ranker = BlendRanker(("a", "b"), prior={"a": 1.0})
>>> X = np.array([[1.0, 0.0], [0.0, 1.0]])
>>> for _ in range(50):
...     ranker.learn(X, 1, "new", np.array([False, False]))
>>> s = ranker.scores(X, "new", np.array([False, False]))
>>> bool(s[1] > s[0])
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from river import optim

USER_SEGMENTS = ("new", "short", "long")
ITEM_SEGMENTS = ("new", "known")


def user_segment(history: int) -> str:
    """A user's segment by how many items Eddy has seen them act on."""
    return "new" if history == 0 else "short" if history < 5 else "long"


class BlendRanker:
    """Linear scores ``x · (w[user segment] + w[item segment])``, learned by softmax steps."""

    def __init__(self, features: Sequence[str], prior: Mapping[str, float], lr: float = 0.1) -> None:
        self.features = tuple(features)
        self.optimizer = optim.AdaGrad(lr=lr)
        self.weights: dict[str, float] = {}
        for seg in USER_SEGMENTS:
            for f in self.features:
                self.weights[f"{f}|u:{seg}"] = float(prior.get(f, 0.0))
        for seg in ITEM_SEGMENTS:
            for f in self.features:
                self.weights[f"{f}|i:{seg}"] = 0.0
        self.updates = 0
        # A constant feature, if any: softmax ignores it within a user segment, and between
        # item segments only the difference counts, so only the new-item offset learns it.
        self._bias = self.features.index("bias") if "bias" in self.features else -1
        self._arrays: dict[str, np.ndarray] = {}
        self._names: dict[str, list[str]] = {}
        # With sharing on, each step's gradient is kept for :meth:`shared` (other workers
        # take the same steps, so that one blend is learned from every worker's users).
        self.sharing = False
        self._steps: list[dict[str, float]] = []

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_arrays", "_names")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("sharing", False)  # snapshots from before workers shared
        self.__dict__.setdefault("_steps", [])
        self._arrays = {}
        self._names = {}

    def _vector(self, group: str) -> np.ndarray:
        vec = self._arrays.get(group)
        if vec is None:
            w = self.weights
            vec = self._arrays[group] = np.array([w[f"{f}|{group}"] for f in self.features])
        return vec

    def effective(self, user_segment: str) -> tuple[np.ndarray, np.ndarray]:
        """The weight vectors for (new items, known items) of a user segment."""
        wu = self._vector(f"u:{user_segment}")
        return wu + self._vector("i:new"), wu + self._vector("i:known")

    def scores(self, X: np.ndarray, user_segment: str, item_new: np.ndarray) -> np.ndarray:
        w_new, w_known = self.effective(user_segment)
        if not item_new.any():
            return X @ w_known
        return np.where(item_new, X @ w_new, X @ w_known)

    def learn(
        self, X: np.ndarray, chosen: int, user_segment: str, item_new: np.ndarray, scores: np.ndarray | None = None,
    ) -> None:
        """One softmax step: row ``chosen`` of ``X`` against every other row (``scores``: the
        rows' current scores, when the caller has them)."""
        if len(X) < 2:
            return
        s = self.scores(X, user_segment, item_new) if scores is None else scores
        p = np.exp(s - s.max())
        p /= p.sum()
        x_t = X[chosen]
        expected_new = (p * item_new) @ X
        expected_known = (p * ~item_new) @ X
        groups = {
            f"u:{user_segment}": expected_new + expected_known - x_t,
            "i:new": expected_new - (x_t if item_new[chosen] else 0.0),
            "i:known": expected_known - (0.0 if item_new[chosen] else x_t),
        }
        grad = {}
        for group, g in groups.items():
            if group == "i:known" and self._bias >= 0:  # relative to the new-item offsets: one bias, not two
                g = g.copy()
                g[self._bias] = 0.0
            names = self._names.get(group)
            if names is None:
                names = self._names[group] = [f"{f}|{group}" for f in self.features]
            if isinstance(g, np.ndarray):
                grad.update((name, gi) for name, gi in zip(names, g.tolist()) if gi)
        self.step(grad)
        if self.sharing:
            self._steps.append(grad)

    def step(self, grad: Mapping[str, float]) -> None:
        """One AdaGrad step along ``grad`` (weight name -> gradient): this ranker's own, or
        another worker's from its :meth:`shared` steps."""
        self.optimizer.step(self.weights, dict(grad))
        self.updates += 1
        self._arrays.clear()

    def shared(self) -> list[dict[str, float]]:
        """The gradients of the steps taken since the last call (with :attr:`sharing` on)."""
        steps, self._steps = self._steps, []
        return steps

    def table(self) -> dict[str, dict[str, float]]:
        """The learned weights: per user segment, and the offsets per item segment."""
        w = self.weights
        return {
            group: {f: round(w[f"{f}|{group}"], 4) for f in self.features}
            for group in [f"u:{s}" for s in USER_SEGMENTS] + [f"i:{s}" for s in ITEM_SEGMENTS]
        }
