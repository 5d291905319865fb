"""Eddy's recommender: every signal a feature, blended by weights learned from the stream.

For each user, a candidate pool is built from what can hold the right item: the items that
co-occur with the user's recent history, what follows their last items, the top of every
trending count, the newest items, the newest items of the user's strongest content features,
and what they were shown. Each candidate gets a row of features:

* ``collab`` — item-to-item co-engagement over the user's last ``history`` items, the most
  recent weighing most (``recency`` per step back), pairs weighted by how close together the
  two items were in a user's history (``pair_decay`` per step), votes divided by the square
  root of the candidate's own count so that blockbusters do not drown everything; every
  rating counts as consumption, positives fully and neutral or negative ones half;
* ``seq`` — what followed the user's last three items in other users' histories;
* ``content`` — the user's taste over category, tags, source and title words (cosine);
  ``declared`` — the interests they declared; ``match`` — content × trending;
  ``fresh_content`` — content × the item's newness;
* ``pop`` and ``trend_*`` — counts decayed at several half-lives, in seconds of event time
  and in events, so that a stream of 12 ratings a day and one of 465 both find theirs;
* ``fresh`` — how new the item is; and ``bias``, a constant that only the item segments
  weigh: whether nobody has touched the item yet is the segment itself.

A :class:`~online_models.ranker.BlendRanker` scores ``w · x`` with weights per user segment
(new, short or long history) and item segment (new or known) and learns them test-then-
train: when a user first acts positively on an item, the pool ranked for them just before
is a softmax choice, and the weights take a step towards the chosen item. Content that is
noise on a stream loses its weight there; where every item is new, content and freshness
lead. Each item's reason names the feature that contributed most under the learned weights.

Co-occurrence and counts are kept per item *key* (numbered once, never moved), in
:mod:`online_models.item_state`; the catalogue's features and serving state are the
:class:`~online_models.item_table.ItemTable`. ``rank`` reads only.

>>> from online_models.base import ItemInfo
>>> model = HybridRecommender()
>>> model.learn_item(ItemInfo("oil-1", category="painting", tags=("oil",), ts=0.0))
>>> model.learn_item(ItemInfo("jazz-1", category="music", tags=("jazz",), ts=0.0))
>>> model.learn_item(ItemInfo("oil-2", category="painting", tags=("oil",), ts=1.0))
>>> model.learn_interaction("ann", "oil-1", 2.0, ts=2.0)
>>> [(s.item_id, s.reason) for s in model.rank("ann", k=2, now=3.0, exclude={"oil-1"})]
[('oil-2', 'new in your interest painting'), ('jazz-1', 'new')]
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from river.feature_extraction import BagOfWords

from online_models.base import ItemInfo, Recommender, Scored, is_consumption
from online_models.item_state import DecayedCounts, SparseRows
from online_models.item_table import ItemTable, resized
from online_models.kernels import EMPTY, featurise
from online_models.ranker import BlendRanker, user_segment

STOP_WORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "is", "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "were", "will", "with", "you", "your", "we", "our"]
)

#: Signals kept per item not in the catalogue yet, and items waiting at most.
EARLY_PER_ITEM = 50
EARLY_ITEMS = 10_000

#: Trending half-lives: in seconds of event time, and in events.
TIME_HALF_LIVES = {"6h": 6 * 3600.0, "1d": 86400.0, "3d": 3 * 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}
EVENT_HALF_LIVES = {"1k": 1_000.0, "10k": 10_000.0}
TRENDS = tuple(f"trend_{name}" for name in (*TIME_HALF_LIVES, *EVENT_HALF_LIVES))
MATCH_TREND = 1  # content × trending uses the one-day count

#: The features of a candidate, in the order a tie between their contributions is settled.
FEATURES = ("collab", "seq", "match", "fresh_content", "content", "declared", "pop", *TRENDS, "fresh", "bias")

#: Starting weights: what a world too small to have taught anything yet should do.
PRIOR = {"collab": 1.0, "seq": 0.5, "content": 3.0, "declared": 3.0, "match": 1.2, "fresh_content": 1.0,
         "pop": 0.1, "fresh": 0.2, **{t: 0.35 for t in TRENDS}}

#: Constructor parameters, in order (what a challenger may change).
PARAMS = (
    "half_life_s", "history", "recency", "pair_decay", "collab_pool", "trend_pool", "newest_pool", "lr",
    "fresh_half_life_s", "taste_features", "index_per_feature",
)
INT_PARAMS = frozenset({"history", "collab_pool", "trend_pool", "newest_pool", "taste_features", "index_per_feature"})

#: The user id of the cold-start list: no user id the API accepts can be it.
NOBODY = "\x00nobody"

#: Below this, a user's taste scale is folded back into the stored values (see _User).
SCALE_FLOOR = 1e-100

#: Learning steps between two refreshes of the top of each trending count.
TOPS_EVERY = 64

_COLLAB, _SEQ, _MATCH, _FRESH_CONTENT, _CONTENT, _DECLARED = range(6)
_POP, _TREND0, _FRESH, _BIAS = (FEATURES.index(f) for f in ("pop", TRENDS[0], "fresh", "bias"))
# online_models/kernels.py writes the features at these places.
assert (_COLLAB, _SEQ, _MATCH, _FRESH_CONTENT, _CONTENT, _DECLARED, _POP, _TREND0, _FRESH, _BIAS, MATCH_TREND) == (
    0, 1, 2, 3, 4, 5, 6, 7, 7 + len(TRENDS), 8 + len(TRENDS), 1)
_CONTENT_FAMILY = frozenset({"match", "fresh_content", "content", "declared"})
_LABELS = {"cat": "category", "tag": "tag", "src": "source", "w": "topic"}


@dataclass
class _User:
    # The taste as of ``taste_ts`` is ``taste[f] * scale``: decaying it multiplies one
    # number instead of every feature.
    taste: dict[str, float] = field(default_factory=dict)
    taste_ts: float = 0.0
    scale: float = 1.0
    recent: deque = field(default_factory=deque)  # (key, weight) of the last items consumed
    seen: dict[str, float] = field(default_factory=dict)  # item -> strongest positive or latest negative
    consumed: dict[str, int] = field(default_factory=dict)  # item -> key: what they acted on
    shown: deque = field(default_factory=lambda: deque(maxlen=20))  # keys of recent impressions
    declared: dict[str, float] = field(default_factory=dict)


@dataclass
class _Context:
    """What ranking needs of one user at one time, computed once per rank."""

    segment: str
    collab: np.ndarray | None
    seq: np.ndarray | None
    history: list[tuple[int, float]]  # (key, vote weight), most recent first
    taste: np.ndarray | None
    declared: np.ndarray | None
    strongest: list[str] = field(default_factory=list)  # the user's strongest taste features


class HybridRecommender(Recommender):
    """Collaborative, sequence, content, trending and freshness features in a learned blend.

    Parameters
    ----------
    half_life_s
        Event-time half-life of a user's content taste.
    history
        How many of a user's latest items vote for their co-engaged items.
    recency
        Weight of a user's history item per step back (the latest weighs 1).
    pair_decay
        Weight of a co-occurrence per step between the two items in a user's history.
    collab_pool, trend_pool, newest_pool
        Candidates taken from co-engagement, from the top of each trending count, and from
        the newest items.
    lr
        Learning rate of the ranker's AdaGrad steps.
    fresh_half_life_s
        Age at which an item's freshness halves.
    taste_features
        How many features a user's taste vector keeps (the strongest).
    index_per_feature
        How many of the newest items each content feature indexes for candidates.
    """

    version = "2"

    def __init__(
        self,
        half_life_s: float = 14 * 86400.0,
        history: int = 20,
        recency: float = 0.8,
        pair_decay: float = 0.9,
        collab_pool: int = 300,
        trend_pool: int = 200,
        newest_pool: int = 100,
        lr: float = 0.1,
        fresh_half_life_s: float = 86400.0,
        taste_features: int = 64,
        index_per_feature: int = 200,
    ) -> None:
        self.half_life_s = half_life_s
        self.history = history
        self.recency = recency
        self.pair_decay = pair_decay
        self.collab_pool = collab_pool
        self.trend_pool = trend_pool
        self.newest_pool = newest_pool
        self.lr = lr
        self.fresh_half_life_s = fresh_half_life_s
        self.taste_features = taste_features
        self.index_per_feature = index_per_feature
        self._words = BagOfWords(lowercase=True, stop_words=set(STOP_WORDS))
        self._items: dict[str, dict[str, float]] = {}
        self._index: dict[str, deque[int]] = {}  # feature -> keys of its newest items
        self._users: dict[str, _User] = {}
        self._origin: dict[str, str] = {}  # item -> the domain (or source) it was scraped from
        self.reliability: dict[str, float] = {}  # domain -> weight in (0, 1] of its items' scores
        # Signals on items not in the catalogue yet (an interaction can overtake its item
        # between two topics): their taste update waits for the item.
        self._early: OrderedDict[str, list[tuple[str, float, float]]] = OrderedDict()
        self._table = ItemTable()
        # What every user taught about each item, by key.
        self._key: dict[str, int] = {}
        self._ids: list[str] = []
        self._count = np.zeros(1024)  # consumptions (a neutral or negative one counts half)
        self._trow = np.full(1024, -1, dtype=np.int64)  # key -> table row (-1: not in the catalogue)
        self._moves = 0  # the table's moves when _trow was last rebuilt
        self._co = SparseRows()
        self._seq = SparseRows()
        self._trend = DecayedCounts(tuple(TIME_HALF_LIVES.values()), tuple(EVENT_HALF_LIVES.values()))
        self._newest: deque[int] = deque(maxlen=newest_pool)
        self.ranker = BlendRanker(FEATURES, PRIOR, lr=lr)
        self._clock = 0  # learning calls so far: what a kept ranking was computed at
        self._tops: np.ndarray | None = None  # keys at the top of the counts, as of the last refresh
        # With sharing on, each consumption's item facts are kept for :meth:`shared`.
        self.sharing = False
        self._facts: list[tuple] = []
        self._transient()

    #: Derived state, rebuilt on use: never pickled.
    _TRANSIENT = ("_kept", "_newest_array", "_index_arrays")

    def _transient(self) -> None:
        self._kept: tuple | None = None  # the last ranking's candidates, for learning from them
        self._newest_array: np.ndarray | None = None
        self._index_arrays: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("sharing", False)  # snapshots from before workers shared
        self.__dict__.setdefault("_facts", [])
        self._transient()

    # --- learning -----------------------------------------------------------------------

    def features(self, item: ItemInfo) -> dict[str, float]:
        """Item -> sparse unit-length feature vector."""
        feats: dict[str, float] = {}
        if item.category:
            feats[f"cat:{item.category.lower()}"] = 2.0
        for tag in item.tags:
            feats[f"tag:{tag.lower()}"] = 1.0
        if item.source:
            feats[f"src:{item.source.lower()}"] = 0.5
        if item.text:
            words = self._words.transform_one(item.text)
            for word in heapq.nlargest(20, words, key=lambda w: (words[w], w)):
                if len(word) > 2 and not word.isdigit():
                    feats[f"w:{word}"] = 0.3
        norm = math.sqrt(sum(v * v for v in feats.values())) or 1.0
        return {f: v / norm for f, v in feats.items()}

    def _key_of(self, item_id: str) -> int:
        key = self._key.get(item_id)
        if key is None:
            key = self._key[item_id] = len(self._ids)
            self._ids.append(item_id)
            if key >= len(self._count):
                self._count = resized(self._count, 2 * len(self._count), 0.0)
                self._trow = resized(self._trow, 2 * len(self._trow), -1)
        return key

    def learn_item(self, item: ItemInfo) -> None:
        self._tick()
        old = self._items.get(item.item_id)
        known = item.item_id in self._key and self._trow[self._key[item.item_id]] >= 0
        key = self._key_of(item.item_id)
        feats = self.features(item)
        self._items[item.item_id] = feats
        if item.domain:
            self._origin[item.item_id] = item.domain
        table = self._table
        r = table.put(item.item_id, feats, born=item.ts, deadline=item.deadline)  # the first version's time stays
        table.weight[r] = self.reliability.get(self._origin.get(item.item_id, ""), 1.0)
        self._place(key, r)
        if not known:
            self._newest.append(key)
            self._newest_array = None
        for f in feats:
            if old is not None and f in old:
                continue
            index = self._index.get(f)
            if index is None:
                index = self._index[f] = deque(maxlen=self.index_per_feature)
            index.append(key)
            self._index_arrays.pop(f, None)
        for user_id, signal, ts in self._early.pop(item.item_id, ()):
            user = self._users.get(user_id)
            if user is not None:
                # The signal's weight as if it had been learned at its time, decayed since.
                weight = signal * 2.0 ** (-max(0.0, user.taste_ts - ts) / self.half_life_s) / user.scale
                for f, x in feats.items():
                    user.taste[f] = user.taste.get(f, 0.0) + weight * x
                self._trim_taste(user)

    def _place(self, key: int, r: int) -> None:
        """Records that the item of ``key`` is at table row ``r`` (all rows, if they moved)."""
        table = self._table
        if table.moves != self._moves:
            self._moves = table.moves
            self._trow[:] = -1
            rows = np.fromiter(table.row.values(), dtype=np.int64, count=len(table.row))
            keys = np.fromiter(map(self._key.__getitem__, table.row), dtype=np.int64, count=len(table.row))
            self._trow[keys] = rows
        else:
            self._trow[key] = r

    def retract_item(self, item_id: str) -> None:
        self._tick()
        self._items.pop(item_id, None)
        self._origin.pop(item_id, None)
        self._table.retract(item_id)
        key = self._key.get(item_id)
        if key is not None:  # back only as a new item, if ever
            self._count[key] = 0.0
            if key < len(self._trend.raw):
                self._trend.raw[key] = 0.0

    def set_reliability(self, weights: dict[str, float]) -> None:
        """Down-weight items of unreliable sources: domain -> weight in (0, 1] (1 = trusted)."""
        self._tick()
        self.reliability = {d: min(1.0, max(0.0, w)) for d, w in weights.items() if w < 1.0}
        table = self._table
        table.weight[: table.n] = 1.0
        for item_id, domain in self._origin.items():
            w = self.reliability.get(domain)
            r = table.row.get(item_id)
            if w is not None and r is not None:
                table.weight[r] = w

    def _user(self, user_id: str) -> _User:
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = _User(recent=deque(maxlen=self.history))
        return user

    def _decay_taste(self, user: _User, ts: float) -> None:
        if not user.taste:
            user.scale = 1.0
        elif ts > user.taste_ts:
            user.scale *= 2.0 ** (-(ts - user.taste_ts) / self.half_life_s)
            if user.scale < SCALE_FLOOR:
                user.taste = {f: v * user.scale for f, v in user.taste.items()}
                user.scale = 1.0
        user.taste_ts = max(user.taste_ts, ts)

    def learn_preference(self, user_id: str, interests: Mapping[str, float], ts: float) -> None:
        self._tick()
        user = self._user(user_id)
        self._decay_taste(user, ts)
        for name, weight in interests.items():
            key = name.lower()
            user.declared[key] = weight
            for feature in (f"cat:{key}", f"tag:{key}"):
                user.taste[feature] = user.taste.get(feature, 0.0) + weight / user.scale

    def learn_interaction(self, user_id: str, item_id: str, signal: float, ts: float, *,
                          shared_state: bool = True) -> None:
        """Learn one interaction. With ``shared_state=False`` only the user's own state is
        learned: what the event teaches every worker (the item's counts and co-engagement,
        the blend's step) was already learned from another worker's :meth:`shared` facts."""
        kept, self._kept = self._kept, None
        clock = self._clock
        self._tick()
        user = self._user(user_id)
        key = self._key_of(item_id)
        consumption = is_consumption(signal)
        first = consumption and item_id not in user.consumed
        if signal > 0 and first and shared_state:
            # Test, then train: the ranking the user would have got (kept from ``rank`` when
            # it was just asked for, at this time) against the item they chose.
            if kept is None or kept[0] != (user_id, ts, clock):
                kept = self._candidates(user_id, ts, ())
            self._learn_choice(kept, key, ts)
        previous = user.seen.get(item_id)
        if not consumption and previous is not None:
            pass  # an impression after an action does not undo the action
        else:
            # The strongest positive, or the latest negative: a like after a click is a like;
            # a hide after a click is a hide.
            user.seen[item_id] = signal if previous is None or signal < 0 else max(previous, signal)
        if signal != 0:
            self._learn_taste(user, user_id, item_id, signal, ts)
        if not consumption:
            user.shown.append(key)
            return
        weight = 1.0 if signal > 0 else 0.5
        recent = user.recent
        if shared_state:
            self._count_consumption(key, ts, weight, recent if first else None)
            if self.sharing:
                after = [(self._ids[k], w) for k, w in reversed(recent)] if first else None
                self._facts.append((item_id, ts, weight, after))
        if first:
            user.consumed[item_id] = key
            recent.append((key, weight))

    def _count_consumption(self, key: int, ts: float, weight: float, after: Iterable | None) -> None:
        """What one consumption teaches about items, whoever's user made it: the item's
        counts and, when it is the user's first of the item, its co-engagement with the
        (key, weight) of the items consumed ``after`` holds, oldest first."""
        self._trend.add(key, ts, weight)
        if after is None:
            return
        self._count[key] += weight
        if after:
            keys, coefs, decay = [], [], 1.0
            for other, other_weight in reversed(after):
                keys.append(other)
                coefs.append(weight * other_weight * decay)
                decay *= self.pair_decay
                if len(keys) == self.history:
                    break
            self._co.add_to_each(keys, key, coefs)
            self._co.add_many(key, keys, coefs)
            self._seq.add(keys[0], key, 1.0)

    # --- item state shared between workers -------------------------------------------------

    def shared(self) -> list[tuple]:
        """What this model learned since the last call that other workers should learn too
        (with :attr:`sharing` on), as facts: per consumption, ``(item_id, ts, weight,
        after)``, where ``after`` lists the ``(item_id, weight)`` the user had consumed
        before, newest first, on their first consumption of the item (None on a repeat);
        per step of the blend, ``(gradient,)``, weight name -> gradient."""
        facts, self._facts = self._facts, []
        return facts

    def learn_shared(self, facts: Iterable[tuple]) -> None:
        """Learn what other workers' users taught every user (their :meth:`shared` facts):
        the same counts and co-engagement as if this model had seen those users (sums, so
        their order against this worker's own learning does not matter), and the same steps
        of the blend (AdaGrad steps, whose order matters only to the last digits)."""
        for fact in facts:
            if len(fact) == 1:
                self.ranker.step(fact[0])
                continue
            item_id, ts, weight, after = fact
            self._tick()
            key = self._key_of(item_id)
            if after is not None:
                after = [(self._key_of(other), w) for other, w in reversed(after)]
            self._count_consumption(key, ts, weight, after)

    def _learn_taste(self, user: _User, user_id: str, item_id: str, signal: float, ts: float) -> None:
        self._decay_taste(user, ts)
        feats = self._items.get(item_id)
        if feats:
            weight = signal / user.scale
            for f, x in feats.items():
                user.taste[f] = user.taste.get(f, 0.0) + weight * x
            self._trim_taste(user)
        elif feats is None:
            waiting = self._early.setdefault(item_id, [])
            if len(waiting) < EARLY_PER_ITEM:
                waiting.append((user_id, signal, ts))
            if len(self._early) > EARLY_ITEMS:
                self._early.popitem(last=False)

    def _learn_choice(self, kept: tuple, key: int, now: float) -> None:
        _, ctx, keys, rows, X, item_new, scores, _ = kept
        where = np.flatnonzero(keys == key)
        if len(where):
            chosen = int(where[0])
        else:  # outside the pool: featurise it beside the pool so the step still counts it
            r = self._trow[key] if key < len(self._trow) else -1
            if r < 0 or not len(keys):
                return
            x, new, _ = self._featurise(ctx, np.array([key]), np.array([r]), now, scale=kept[7])
            X, item_new = np.vstack((X, x)), np.concatenate((item_new, new))
            scores = np.concatenate((scores, self.ranker.scores(x, ctx.segment, new)))
            chosen = len(X) - 1
        self.ranker.sharing = self.sharing
        self.ranker.learn(X, chosen, ctx.segment, item_new, scores)
        if self.sharing:
            self._facts.extend((grad,) for grad in self.ranker.shared())

    def _trim_taste(self, user: _User) -> None:
        if len(user.taste) > 2 * self.taste_features:
            keep = heapq.nlargest(self.taste_features, user.taste.items(), key=lambda kv: abs(kv[1]))
            user.taste = dict(keep)

    def forget_user(self, user_id: str) -> None:
        # Co-engagement, sequences and counts are anonymous aggregates and stay.
        self._tick()
        self._kept = None  # it may hold the user's history
        self._users.pop(user_id, None)
        for waiting in self._early.values():
            waiting[:] = [w for w in waiting if w[0] != user_id]

    def user_ids(self) -> list[str]:
        return list(self._users)

    def params(self) -> dict[str, float]:
        """The constructor arguments this model was built with."""
        return {name: getattr(self, name) for name in PARAMS}

    def weights(self) -> dict[str, dict[str, float]]:
        """The ranker's learned weights, per user segment and item-segment offset."""
        return self.ranker.table()

    # --- reading ------------------------------------------------------------------------

    def published_at(self, item_id: str) -> float | None:
        """The event time of the item's first version (None for an item never seen)."""
        r = self._table.row.get(item_id)
        return None if r is None else float(self._table.born[r])

    def knows(self, user_id: str) -> bool:
        return user_id in self._users

    def seen_by(self, user_id: str) -> set[str]:
        user = self._users.get(user_id)
        return set(user.seen) if user else set()

    def consumed_by(self, user_id: str) -> set[str]:
        """Items the user acted on; impressions (exposure, not action) do not count."""
        user = self._users.get(user_id)
        return set(user.consumed) if user else set()

    def recent_consumed(self, user_id: str, n: int) -> list[str]:
        """The last ``n`` items the user acted on, newest first."""
        user = self._users.get(user_id)
        if user is None:
            return []
        return [item_id for item_id, _ in zip(reversed(user.consumed), range(n))]

    @property
    def n_users(self) -> int:
        return len(self._users)

    def _context(self, user: _User | None, now: float) -> _Context:
        if user is None:
            return _Context("new", None, None, [], None, None)
        n = len(self._ids)
        history, vote = [], 1.0
        for key, weight in reversed(user.recent):
            history.append((key, vote * weight))
            vote *= self.recency
        collab = seq = None
        if history:
            keys, votes = zip(*history)
            collab = self._co.gather(keys, votes, n)
            seq = self._seq.gather(keys[:3], (1.0, 0.5, 0.25)[: len(keys)], n)
        taste = self._current_taste(user, now)
        table = self._table
        declared = None
        if user.declared:
            declared = table.dense({f"{kind}:{name}": w for name, w in user.declared.items() for kind in ("cat", "tag")})
        strongest = [f for f, _ in heapq.nlargest(8, taste.items(), key=lambda kv: kv[1])] if taste else []
        return _Context(user_segment(len(user.consumed)), collab, seq, history,
                        table.dense(taste) if taste else None, declared, strongest)

    def _tick(self) -> None:
        """One learning call more; every ``TOPS_EVERY`` calls the top of the counts is taken
        again. At fixed points of the learning, not of the reads, so that a model restored
        from a snapshot ranks exactly as the one that kept running."""
        self._clock += 1
        if self._clock % TOPS_EVERY == 0:
            self._tops = self._compute_tops()

    def _top_keys(self) -> np.ndarray:
        """Keys at the top of each trending count and of the plain count (as of the last
        refresh; computed afresh until the first)."""
        return self._compute_tops() if self._tops is None else self._tops

    def _compute_tops(self) -> np.ndarray:
        n = len(self._ids)
        table = self._table
        rows = self._trow[:n]
        servable = np.zeros(n, dtype=bool)
        placed = rows >= 0
        servable[placed] = table.live[rows[placed]]
        keys = self._trend.top(self.trend_pool, n, servable)
        count = self._count[:n] * servable
        if n > self.trend_pool:
            keys = np.union1d(keys, np.argpartition(-count, self.trend_pool)[: self.trend_pool])
        return keys

    def _index_keys(self, feature: str) -> np.ndarray:
        """The keys of the newest items of a feature, as an array kept until it gains one."""
        keys = self._index_arrays.get(feature)
        if keys is None:
            index = self._index.get(feature, ())
            keys = self._index_arrays[feature] = np.fromiter(index, dtype=np.int64, count=len(index))
        return keys

    def _newest_keys(self) -> np.ndarray:
        if self._newest_array is None:
            self._newest_array = np.array(self._newest, dtype=np.int64)
        return self._newest_array

    def _candidates(self, user_id: str, now: float, exclude: Iterable[str]) -> tuple:
        """The pool for a user at ``now`` with its features and scores: (state, context,
        keys, rows, features, item is new, scores, feature scale)."""
        user = self._users.get(user_id)
        ctx = self._context(user, now)
        n = len(self._ids)
        pool = np.zeros(n, dtype=bool)
        pool[self._top_keys()] = True
        pool[self._newest_keys()] = True
        count = self._count[:n]
        for dense, size in ((ctx.collab, self.collab_pool), (ctx.seq, self.collab_pool // 3)):
            if dense is None:
                continue
            hits = np.flatnonzero(dense)
            if len(hits) > size:
                votes = dense[hits] / np.sqrt(np.maximum(count[hits], 1.0))
                hits = hits[np.argpartition(-votes, size)[:size]]
            pool[hits] = True
        if user is not None:
            for f in ctx.strongest:
                pool[self._index_keys(f)] = True
            if user.shown:
                pool[np.fromiter(user.shown, dtype=np.int64, count=len(user.shown))] = True
            if user.consumed:
                pool[np.fromiter(user.consumed.values(), dtype=np.int64, count=len(user.consumed))] = False
            extra = exclude - user.consumed.keys() if exclude else ()  # dict_keys takes any iterable
        else:
            extra = exclude
        if extra:
            pool[[k for i in extra if (k := self._key.get(i)) is not None]] = False
        keys = np.flatnonzero(pool)
        rows = self._trow[keys]
        table = self._table
        ok = rows >= 0
        keys, rows = keys[ok], rows[ok]
        ok = table.live[rows] & (table.born[rows] <= now) & (table.deadline[rows] >= now)
        keys, rows = keys[ok], rows[ok]
        X, item_new, scale = self._featurise(ctx, keys, rows, now)
        scores = self.ranker.scores(X, ctx.segment, item_new) if len(keys) else np.empty(0)
        return (user_id, now, self._clock), ctx, keys, rows, X, item_new, scores, scale

    def _featurise(self, ctx: _Context, keys: np.ndarray, rows: np.ndarray, now: float,
                   scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The feature rows of ``keys``, and the pool maxima that scale the collaborative,
        sequence, match, count and trend features to [0, 1] (taken from ``scale`` when
        featurising an item beside a pool already scaled). Relative to the pool, a count's
        weight means the same in a world of ten users as in one of a million."""
        m = len(keys)
        if not m:
            return np.zeros((0, len(FEATURES))), np.zeros(0, dtype=bool), np.full(3 + len(TRENDS), np.nan)
        table = self._table
        X = np.empty((m, len(FEATURES)))
        item_new = np.empty(m, dtype=bool)
        # The pool's maxima scale the collaborative, sequence, count and trend features to
        # [0, 1] (NaN: take them from this pool); the trends are averaged rather than summed:
        # the counts are alike, and each of them taking a full step towards the same gradient
        # would move the family len(TRENDS) times as far.
        scale = np.full(3 + len(TRENDS), np.nan) if scale is None else scale
        featurise(keys, rows, self._count, EMPTY if ctx.collab is None else ctx.collab,
                  EMPTY if ctx.seq is None else ctx.seq, table.indptr, table.indices, table.data,
                  EMPTY if ctx.taste is None else ctx.taste, EMPTY if ctx.declared is None else ctx.declared,
                  table.born, np.log1p(self._trend.at(keys, now)), float(now),
                  float(self.fresh_half_life_s), scale, X, item_new)
        return X, item_new, scale

    def _best(self, kept: tuple, k: int) -> np.ndarray:
        """Indices into the pool of the k best, best first (ties by item id)."""
        keys, rows, scores = kept[2], kept[3], kept[6]
        if not len(keys) or k <= 0:
            return np.empty(0, dtype=np.int64)
        table = self._table
        if self.reliability:
            scores = scores + np.log(np.maximum(table.weight[rows], 1e-12))
        if len(keys) > k:
            kth = np.partition(scores, len(keys) - k)[len(keys) - k]
            chosen = np.flatnonzero(scores >= kth)  # ties at the edge are settled by item id below
        else:
            chosen = np.arange(len(keys))
        ids = self._ids
        order = sorted(chosen.tolist(), key=lambda j: (-scores[j], ids[keys[j]]))[:k]
        return np.array(order, dtype=np.int64)

    def ranked_ids(self, user_id: str, k: int, now: float, exclude: Iterable[str] = ()) -> list[str]:
        """The item ids of :meth:`rank`, without working out their reasons."""
        kept = self._kept = self._candidates(user_id, now, exclude)
        ids, keys = self._ids, kept[2]
        return [ids[keys[j]] for j in self._best(kept, k).tolist()]

    def rank(self, user_id: str, k: int, now: float, exclude: Iterable[str] = ()) -> list[Scored]:
        kept = self._kept = self._candidates(user_id, now, exclude)
        _, ctx, keys, rows, X, item_new, scores, _ = kept
        best = self._best(kept, k)
        if not len(best):
            return []
        w_new, w_known = self.ranker.effective(ctx.segment)
        parts = X[best] * np.where(item_new[best, None], w_new, w_known)
        mains = [FEATURES[m] if top > 0 else "bias" if new else "trend_1d"  # nothing for it: new, or trending
                 for m, top, new in zip(np.argmax(parts, axis=1).tolist(), parts.max(axis=1).tolist(),
                                        item_new[best].tolist())]  # the first of equals, in FEATURES order
        reasons = self._reasons(ctx, keys[best], rows[best], mains, X[best, _FRESH])
        weight = self._table.weight[rows[best]]
        ids = self._ids
        return [
            Scored(ids[key], float(f"{math.exp(min(50.0, score)) * w:.8g}"), reason)
            for key, score, w, reason in zip(keys[best].tolist(), scores[best].tolist(), weight.tolist(), reasons)
        ]

    def cold_start(self, k: int, now: float) -> list[Scored]:
        """The list for a user Eddy knows nothing about: the new-user weights over trends,
        counts and newness (the same scoring path as every other list)."""
        return self.rank(NOBODY, k, now)

    def _sources(self, ctx: _Context, keys: np.ndarray) -> list[int]:
        """Per key, the history item that voted most for it (the latest of equals; -1: none)."""
        history = [h for h, _ in ctx.history]
        entries = [self._co.row(h) for h in history]
        cols = np.concatenate([c for c, _ in entries])
        if not len(cols) or not len(keys):
            return [-1] * len(keys)
        vals = np.concatenate([v for _, v in entries])
        voter = np.repeat(np.arange(len(history)), [len(c) for c, _ in entries])
        order = np.argsort(keys)
        ordered = keys[order]
        at = np.minimum(np.searchsorted(ordered, cols), len(keys) - 1)
        hit = ordered[at] == cols
        votes = np.zeros((len(history), len(keys)))
        np.add.at(votes, (voter[hit], order[at[hit]]), vals[hit])  # a row repeats a key until it is packed
        votes *= np.array([vote for _, vote in ctx.history])[:, None]
        best = np.argmax(votes, axis=0)  # the first of equals: the latest, history is newest first
        found = votes[best, np.arange(len(keys))] > 0
        return np.where(found, np.array(history)[best], -1).tolist()

    def _reasons(self, ctx: _Context, keys: np.ndarray, rows: np.ndarray, mains: list[str], fresh: np.ndarray) -> list[str]:
        """Why each item is in the list, from its main feature (the one contributing most)."""
        sources = [-1] * len(keys)
        voted = [j for j, main in enumerate(mains) if main in ("collab", "seq")]
        if ctx.history and voted:
            for j, source in zip(voted, self._sources(ctx, keys[voted]), strict=True):
                sources[j] = source
        table = self._table
        taste = table.best_features(rows, ctx.taste) if ctx.taste is not None else None
        declared = table.best_features(rows, ctx.declared) if ctx.declared is not None else None
        out = []
        for j, main in enumerate(mains):
            if main in ("collab", "seq") and sources[j] >= 0:
                out.append(f"because you liked {self._ids[sources[j]]}")
                continue
            names = declared if main == "declared" else taste
            if main in _CONTENT_FAMILY and names is not None:
                kind, _, name = names[j].partition(":")
                if main in ("match", "declared"):
                    out.append(f"popular in {name}")
                elif fresh[j] >= 0.5:
                    out.append(f"new in your interest {name}")
                else:
                    out.append(f"matches your {_LABELS.get(kind, kind)} {name}")
                continue
            out.append("new" if main in ("fresh", "bias") else "popular" if main == "pop" else "trending")
        return out

    def _current_taste(self, user: _User, now: float) -> dict[str, float]:
        if not user.taste:
            return {}
        # Unit length: the stored values' common scale (user.scale) cancels out.
        factor = 2.0 ** (-max(0.0, now - user.taste_ts) / self.half_life_s)
        norm = math.sqrt(sum(v * v for v in user.taste.values())) or 1.0
        return {f: v * factor / norm for f, v in user.taste.items()}
