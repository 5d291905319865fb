"""Eddy's recommender: collaborative, content and trending signals learned online.

Three signals, each learned one event at a time with event-time decay:

* **collaborative** — item-to-item co-engagement: when a user engages with ``j`` after
  ``i``, the pair gains weight; a user's recent positives vote for their neighbours,
  normalised like a cosine so that blockbusters do not drown everything;
* **content** — a per-user taste vector over item features (category, tags, source and
  title/text words through River's ``BagOfWords``), pushed up by positives and down by
  negatives, seeded by declared interests; it ranks an item scraped a second ago before
  anyone has clicked it;
* **trending** — recency-decayed popularity, the prior for everyone and the whole answer
  for a user Eddy knows nothing about.

Scores are blended after scaling each signal to [0, 1] over the candidates, plus two
interactions of signals: *match* (content × trending: popular within the user's taste)
and *fresh* (content × the item's newness). Each item gets the reason of the signal that
contributed most. ``rank`` reads only.

>>> from online_models.base import ItemInfo
>>> from online_models.hybrid import HybridRecommender
>>> model = HybridRecommender()
>>> model.learn_item(ItemInfo("oil-1", category="painting", tags=("oil",), ts=0.0))
>>> model.learn_item(ItemInfo("jazz-1", category="music", tags=("jazz",), ts=0.0))
>>> model.learn_item(ItemInfo("oil-2", category="painting", tags=("oil",), ts=1.0))
>>> model.learn_interaction("ann", "oil-1", 2.0, ts=2.0)
>>> [(s.item_id, s.reason) for s in model.rank("ann", k=2, now=3.0, exclude={"oil-1"})]
[('oil-2', 'new in your interest painting')]
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from river.feature_extraction import BagOfWords

from online_models.base import ItemInfo, Recommender, Scored
from online_models.item_table import ItemTable
from online_models.popularity import Popularity

STOP_WORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "is", "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "were", "will", "with", "you", "your", "we", "our"]
)


#: Features whose candidate rows are kept between ranks (at most ~800 bytes each).
INDEX_ROWS_KEPT = 4096

#: Signals kept per item not in the catalogue yet, and items waiting at most.
EARLY_PER_ITEM = 50
EARLY_ITEMS = 10_000

#: Constructor parameters, in order (what a challenger may change).
PARAMS = (
    "half_life_s", "trend_half_life_s", "w_collab", "w_content", "w_trend", "w_fresh", "w_match",
    "fresh_half_life_s", "history", "neighbours", "taste_features", "index_per_feature",
)


#: The blended signals, in the order a tie between them is settled (the first wins).
SIGNALS = ("collab", "content", "trend", "match", "fresh")

#: Below this, a user's taste scale is folded back into the stored values (see _User).
SCALE_FLOOR = 1e-100


@dataclass
class _User:
    # The taste as of ``taste_ts`` is ``taste[f] * scale``: decaying it multiplies one
    # number instead of every feature (that loop was the largest cost of learning).
    taste: dict[str, float] = field(default_factory=dict)
    taste_ts: float = 0.0
    scale: float = 1.0
    recent: deque = field(default_factory=deque)  # (item_id, signal, ts) of positives
    seen: dict[str, float] = field(default_factory=dict)  # item -> last signal
    declared: dict[str, float] = field(default_factory=dict)


class HybridRecommender(Recommender):
    """Collaborative + content + trending, online.

    Parameters
    ----------
    half_life_s
        Event-time half-life of a user's taste and of the weight of their past positives.
    trend_half_life_s
        Half-life of the trending (decayed popularity) signal.
    w_collab, w_content, w_trend
        Blend weights of the three signals, each scaled to [0, 1] over the candidates.
    w_match
        Weight of content × trending, so that what is popular within a user's taste
        outranks what is popular elsewhere.
    w_fresh, fresh_half_life_s
        Bonus for new items that match the user's taste (content scaled, halving every
        ``fresh_half_life_s`` of the item's age), so that new items get seen before their
        first click.
    history
        How many recent positives of a user vote for their neighbours.
    neighbours
        How many co-engaged items are kept per item (the strongest).
    taste_features
        How many features a user's taste vector keeps (the strongest).
    index_per_feature
        How many of the newest items each content feature indexes for candidates.
    """

    version = "1"

    def __init__(
        self,
        half_life_s: float = 14 * 86400.0,
        trend_half_life_s: float = 3 * 86400.0,
        w_collab: float = 0.5,
        w_content: float = 0.6,
        w_trend: float = 0.4,
        w_fresh: float = 0.5,
        w_match: float = 2.0,
        fresh_half_life_s: float = 86400.0,
        history: int = 20,
        neighbours: int = 50,
        taste_features: int = 64,
        index_per_feature: int = 200,
    ) -> None:
        self.half_life_s = half_life_s
        self.trend_half_life_s = trend_half_life_s
        self.w_collab = w_collab
        self.w_content = w_content
        self.w_trend = w_trend
        self.w_fresh = w_fresh
        self.w_match = w_match
        self.fresh_half_life_s = fresh_half_life_s
        self.history = history
        self.neighbours = neighbours
        self.taste_features = taste_features
        self.index_per_feature = index_per_feature
        self._words = BagOfWords(lowercase=True, stop_words=set(STOP_WORDS))
        self._items: dict[str, dict[str, float]] = {}
        self._index: dict[str, deque] = {}
        # feature -> (table moves, rows), the most recently ranked features only
        self._rows_of_index: OrderedDict[str, tuple[int, np.ndarray]] = OrderedDict()
        self._co: dict[str, dict[str, float]] = {}
        self._engaged: dict[str, float] = {}  # item -> number of positive engagements
        self._users: dict[str, _User] = {}
        self._origin: dict[str, str] = {}  # item -> the domain (or source) it was scraped from
        self.reliability: dict[str, float] = {}  # domain -> weight in (0, 1] of its items' scores
        # Signals on items not in the catalogue yet (an interaction can overtake its item
        # between two topics): their taste update waits for the item.
        self._early: OrderedDict[str, list[tuple[str, float, float]]] = OrderedDict()
        self.trend = Popularity(half_life_s=trend_half_life_s)
        # The catalogue again, as arrays for ranking (features, serving state, trend).
        self._table = ItemTable()
        self._trend_ref = self.trend.ref

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_rows_of_index"}  # derived: rebuilt on use

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._rows_of_index = OrderedDict()
        if "_table" not in state:  # pickled before the item table existed: build it
            self._table = ItemTable()
            self._trend_ref = self.trend.ref
            born = state.pop("_item_ts")
            for item_id, feats in self._items.items():
                self._put_row(item_id, feats, born=born[item_id], deadline=self.trend.deadline(item_id))
            self.__dict__.pop("_item_ts", None)

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

    def learn_item(self, item: ItemInfo) -> None:
        self.trend.learn_item(item)
        old = self._items.get(item.item_id)
        feats = self.features(item)
        self._items[item.item_id] = feats
        if item.domain:
            self._origin[item.item_id] = item.domain
        self._put_row(item.item_id, feats, born=item.ts, deadline=item.deadline)
        for f in feats:
            if old is not None and f in old:
                continue
            index = self._index.get(f)
            if index is None:
                index = self._index[f] = deque(maxlen=self.index_per_feature)
            index.append(item.item_id)
            self._rows_of_index.pop(f, None)
        for user_id, signal, ts in self._early.pop(item.item_id, ()):
            user = self._users.get(user_id)
            if user is not None:
                # The signal's weight as if it had been learned at its time, decayed since.
                weight = signal * 2.0 ** (-max(0.0, user.taste_ts - ts) / self.half_life_s) / user.scale
                for f, x in feats.items():
                    user.taste[f] = user.taste.get(f, 0.0) + weight * x
                self._trim_taste(user)

    def _put_row(self, item_id: str, feats: dict[str, float], *, born: float, deadline: float | None) -> None:
        table = self._table
        r = table.put(item_id, feats, born=born, deadline=deadline)  # the first version's time stays
        table.trend[r] = self.trend.raw(item_id)
        table.weight[r] = self.reliability.get(self._origin.get(item_id, ""), 1.0)

    def retract_item(self, item_id: str) -> None:
        self.trend.retract_item(item_id)
        self._items.pop(item_id, None)
        self._origin.pop(item_id, None)
        self._table.retract(item_id)

    def set_reliability(self, weights: dict[str, float]) -> None:
        """Down-weight items of unreliable sources: domain -> weight in (0, 1] (1 = trusted)."""
        self.reliability = {d: min(1.0, max(0.0, w)) for d, w in weights.items() if w < 1.0}
        table = self._table
        table.weight[: table.n] = 1.0
        for item_id, domain in self._origin.items():
            w = self.reliability.get(domain)
            r = table.row.get(item_id)
            if w is not None and r is not None:
                table.weight[r] = w

    def _sync_trend(self, item_id: str) -> None:
        """Copies the trending model's raw score of an item into the table."""
        table, trend = self._table, self.trend
        if trend.ref != self._trend_ref:  # rebased: every raw score was rescaled
            self._trend_ref = trend.ref
            for other, r in table.row.items():
                table.trend[r] = trend.raw(other)
            return
        r = table.row.get(item_id)
        if r is not None:
            table.trend[r] = trend.raw(item_id)

    def _user(self, user_id: str) -> _User:
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = _User()
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
        user = self._user(user_id)
        self._decay_taste(user, ts)
        for name, weight in interests.items():
            key = name.lower()
            user.declared[key] = weight
            for feature in (f"cat:{key}", f"tag:{key}"):
                user.taste[feature] = user.taste.get(feature, 0.0) + weight / user.scale

    def learn_interaction(self, user_id: str, item_id: str, signal: float, ts: float) -> None:
        if signal == 0:
            return
        user = self._user(user_id)
        self.trend.learn_interaction(user_id, item_id, signal, ts)
        self._sync_trend(item_id)
        previous = user.seen.get(item_id)
        # Remember the strongest positive, or the latest negative: a like after an
        # impression is a like; a hide after a click is a hide.
        user.seen[item_id] = signal if previous is None or signal < 0 else max(previous, signal)
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
        if signal > 0 and (previous is None or previous <= 0):
            # First positive engagement with the item: count it and pair it with the
            # user's recent positives (repeats would inflate pairs of heavy users).
            self._engaged[item_id] = self._engaged.get(item_id, 0.0) + 1.0
            for other, _, other_ts in user.recent:
                if other == item_id:
                    continue
                w = 2.0 ** (-abs(ts - other_ts) / self.half_life_s)
                self._pair(other, item_id, w)
                self._pair(item_id, other, w)
            user.recent.append((item_id, signal, ts))
            while len(user.recent) > self.history:
                user.recent.popleft()

    def _trim_taste(self, user: _User) -> None:
        if len(user.taste) > 2 * self.taste_features:
            keep = heapq.nlargest(self.taste_features, user.taste.items(), key=lambda kv: abs(kv[1]))
            user.taste = dict(keep)

    def _pair(self, a: str, b: str, w: float) -> None:
        row = self._co.get(a)
        if row is None:
            row = self._co[a] = {}
        row[b] = row.get(b, 0.0) + w
        if len(row) > 2 * self.neighbours:
            self._co[a] = dict(heapq.nlargest(self.neighbours, row.items(), key=lambda kv: kv[1]))

    def forget_user(self, user_id: str) -> None:
        # Co-engagement pairs and popularity are anonymous aggregates and stay.
        self._users.pop(user_id, None)
        for waiting in self._early.values():
            waiting[:] = [w for w in waiting if w[0] != user_id]

    def user_ids(self) -> list[str]:
        return list(self._users)

    def params(self) -> dict[str, float]:
        """The constructor arguments this model was built with."""
        return {name: getattr(self, name) for name in PARAMS}

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
        return {i for i, s in user.seen.items() if abs(s) >= 0.5} if user else set()

    @property
    def n_users(self) -> int:
        return len(self._users)

    def rank(self, user_id: str, k: int, now: float, exclude: Iterable[str] = ()) -> list[Scored]:
        table = self._table
        if not table.n or k <= 0:
            return []
        user = self._users.get(user_id)
        excluded = set(exclude)
        if user is not None:
            # Dislikes and hides, not mere ignored impressions.
            excluded.update(i for i, s in user.seen.items() if s <= -1)
        # Candidates: what the user's recent positives co-engage with, the newest items of
        # their strongest taste features, and what trends; all must be servable now (an
        # item exists from its event time on, so a replay that knows the whole catalogue
        # never serves an item before it was published).
        eligible = table.eligible(now)
        eligible[table.rows_of(excluded)] = False
        pool = np.zeros(table.n, dtype=bool)
        collab_of = np.zeros(table.n)
        taste: dict[str, float] = {}
        voters: list[tuple[str, float]] = []
        if user is not None:
            voters = self._voters(user, now)
            collab = self._collab(voters)
            if collab:
                get = table.row.get
                known = [(r, v) for i, v in collab.items() if (r := get(i)) is not None]
                if known:
                    rows, votes = zip(*known)
                    collab_of[list(rows)] = votes
                    pool[list(rows)] = True
            taste = self._current_taste(user, now)
            for f, _ in heapq.nlargest(8, taste.items(), key=lambda kv: kv[1]):
                pool[self._index_rows(f)] = True
        trend_raw = np.where(eligible, table.trend[: table.n], 0.0)
        m = max(50, 2 * k)
        if table.n > m:
            threshold = np.partition(trend_raw, table.n - m)[table.n - m]
            pool |= trend_raw >= max(threshold, np.finfo(float).tiny)  # ties at the edge all enter
        else:
            pool |= trend_raw > 0
        rows = np.flatnonzero(pool & eligible)
        if not len(rows):
            return []
        c = collab_of[rows]
        c = np.maximum(c / (float(c.max()) or 1.0), -1.0)
        t = np.log1p(table.trend[rows] * self.trend.factor(now))
        t = t / (float(t.max()) or 1.0)
        dense = table.dense(taste) if user is not None else None
        if taste:
            m_ = table.content(rows, dense)
            m_ = np.maximum(m_ / (float(m_.max()) or 1.0), -1.0)
        else:
            m_ = np.zeros(len(rows))
        m_pos = np.maximum(m_, 0.0)
        fresh = np.exp2(-np.maximum(0.0, now - table.born[rows]) / self.fresh_half_life_s)
        parts = {  # in the order of SIGNALS
            "collab": self.w_collab * c,
            "content": self.w_content * m_,
            "trend": self.w_trend * t,
            "match": self.w_match * m_pos * t,
            "fresh": self.w_fresh * m_pos * fresh,
        }
        total = parts["collab"] + parts["content"] + parts["trend"] + parts["match"] + parts["fresh"]
        if self.reliability:
            total = np.where(total > 0, total * table.weight[rows], total)
        if len(rows) > k:
            kth = np.partition(total, len(rows) - k)[len(rows) - k]
            chosen = np.flatnonzero(total >= kth)  # ties at the edge are settled by item id below
        else:
            chosen = np.arange(len(rows))
        ids = table.ids
        best = sorted(zip(total[chosen].tolist(), [ids[r] for r in rows[chosen].tolist()], chosen.tolist()), reverse=True)[:k]
        picked = np.array([j for _, _, j in best], dtype=np.int64)
        shares = np.stack([values[picked] for values in parts.values()])
        mains = [SIGNALS[i] for i in np.argmax(shares, axis=0).tolist()]  # the first of equals, like max()
        columns = [dict(zip(SIGNALS, column)) for column in shares.T.tolist()]
        # The feature behind a content reason: the one adding most to the item's match.
        features = table.best_features(rows[picked], dense) if dense is not None else [None] * len(best)
        return [Scored(item_id, round(score, 6), self._reason(voters, item_id, main, contributions, feature), contributions)
                for (score, item_id, _), main, contributions, feature in zip(best, mains, columns, features)]

    def _index_rows(self, feature: str) -> np.ndarray:
        """The rows of the newest items of a feature, kept until the feature gains an item
        or an item moves to another row."""
        kept = self._rows_of_index
        cached = kept.get(feature)
        if cached is not None and cached[0] == self._table.moves:
            kept.move_to_end(feature)
            return cached[1]
        row = self._table.row.__getitem__  # every indexed item has a row
        rows = np.fromiter(map(row, self._index.get(feature, ())), dtype=np.int32)
        kept[feature] = (self._table.moves, rows)
        if len(kept) > INDEX_ROWS_KEPT:
            kept.popitem(last=False)
        return rows

    def _collab(self, voters: list[tuple[str, float]]) -> dict[str, float]:
        """Votes of the user's recent positives for their co-engaged items (cosine-like)."""
        engaged, co, sqrt = self._engaged, self._co, math.sqrt
        collab: dict[str, float] = {}
        tally = collab.get
        for source, weight in voters:
            for other, pair in co[source].items():
                collab[other] = tally(other, 0.0) + weight * pair / sqrt(engaged.get(other, 1.0))
        return collab

    def _voters(self, user: _User, now: float) -> list[tuple[str, float]]:
        """The user's recent positives that have co-engaged items, with their vote weight."""
        engaged, co, half_life = self._engaged, self._co, self.half_life_s
        return [(source, signal * 2.0 ** (-max(0.0, now - ts) / half_life) / math.sqrt(engaged.get(source, 1.0)))
                for source, signal, ts in user.recent if co.get(source)]

    def _because(self, voters: list[tuple[str, float]], item_id: str) -> str | None:
        """The recent positive that voted most for ``item_id`` (the first of equals); worked
        out for the few items a list explains rather than tracked for every candidate."""
        best, best_vote = None, 0.0
        for source, weight in voters:
            pair = self._co[source].get(item_id)
            if pair is not None and weight * pair > best_vote:  # the item's own norm divides every vote alike
                best, best_vote = source, weight * pair
        return best

    def _current_taste(self, user: _User, now: float) -> dict[str, float]:
        if not user.taste:
            return {}
        # Unit length: the stored values' common scale (user.scale) cancels out.
        factor = 2.0 ** (-max(0.0, now - user.taste_ts) / self.half_life_s)
        norm = math.sqrt(sum(v * v for v in user.taste.values())) or 1.0
        return {f: v * factor / norm for f, v in user.taste.items()}

    def _reason(
        self, voters: list[tuple[str, float]], item_id: str, main: str, contributions: dict[str, float],
        feature: str | None,
    ) -> str:
        """Why an item is in the list, from ``main``, the signal that contributed most."""
        if main == "collab" and (source := self._because(voters, item_id)) is not None:
            return f"because you liked {source}"
        if main in ("content", "fresh", "match") and feature is not None:
            kind, _, name = feature.partition(":")
            if main == "match":
                return f"popular in {name}"
            if contributions.get("fresh", 0.0) >= 0.5 * self.w_fresh > 0:
                return f"new in your interest {name}"
            label = {"cat": "category", "tag": "tag", "src": "source", "w": "topic"}.get(kind, kind)
            return f"matches your {label} {name}"
        return "trending"
