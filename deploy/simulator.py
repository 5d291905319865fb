"""A seeded, endless stream of realistic Eddy events with a known ground truth.

Demos, load tests and model evaluations need traffic that looks like production but whose
hidden truth can be read back: which items a user would like, which scraping strategy works
on a domain right now, how likely a bid is to win. :class:`Simulator` keeps that truth on the
instance and emits plain JSON-ready dicts that validate against ``schemas.events``. Users have
Dirichlet tastes and power-law activity; items keep appearing, have power-law popularity and
may expire; sessions show impressions and turn affinity into clicks, likes and ratings;
scraping strategies break and recover; bid outcomes arrive days after their bids. Everything
is drawn from one ``random.Random(seed)``, so a seed always gives the same stream.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field
from itertools import accumulate, islice
from typing import Any, Callable, Iterator

__all__ = ["SimConfig", "Simulator"]

DAY = 86_400.0
_TAG_WORDS = tuple(
    "abstract portrait landscape residency grant open-call festival digital analog urban nature"
    " emerging prize remote part-time freelance documentary animation jazz electronic poetry"
    " fiction branding typography ceramics bronze installation street studio workshop mentorship"
    " exhibition commission fellowship short-film orchestra illustration ux zine archive".split()
)
_TITLE_WORDS = ("Open call:", "New:", "Deadline soon:", "Apply now:", "Call for entries:", "Featured:")
_SKILLS = tuple(
    "python sql react typescript figma photoshop illustrator blender copywriting seo translation"
    " video-editing motion-graphics 3d-modeling ux-research wordpress shopify django aws docker"
    " excel tableau voice-over mixing mastering photography retouching branding animation"
    " scriptwriting".split()
)
_JOB_FILLER = tuple("we need a reliable person for our project with fast turnaround and care".split())
_BID_SENTENCES = (
    "Hello, I would love to help with this project.", "I have delivered many similar projects on time.",
    "Please see my portfolio for relevant examples.", "I can start immediately and keep you updated daily.",
    "My approach starts with a short call to clarify the scope.", "I offer one round of revisions at no extra cost.",
    "Happy to answer any questions before you decide.", "I test everything before handing it over.",
)
_FAILURES = (("timeout", None), ("http_403", 403), ("parse_error", 200), ("captcha", 200), ("http_503", 503))
_BLOCKED = (("http_403", 403), ("captcha", 200))  # how a broken strategy usually fails


@dataclass(frozen=True)
class SimConfig:
    """Knobs of the simulation; the defaults give a small, lively marketplace.

    The four ``weight_*`` values set the mix of event types; ``bid_outcome`` events come on
    top of ``weight_bid`` (about 0.95 per bid, once due) and ``user_deleted`` at
    ``user_deleted_rate`` per event. ``n_items`` is the size of the live catalogue the
    simulator keeps: once it is full, an item slot retracts the oldest open-ended item.
    """

    n_users: int = 500
    n_items: int = 300
    n_domains: int = 10
    n_tags: int = 40
    n_profiles: int = 60
    strategies: tuple[str, ...] = ("requests", "playwright", "api", "rss")
    categories: tuple[str, ...] = (
        "painting", "sculpture", "photography", "jobs", "film", "music", "writing", "design",
    )
    seed: int = 7
    start_ts: float = 1_767_225_600.0
    mean_seconds_between_events: float = 30.0
    weight_interaction: float = 0.70
    weight_item: float = 0.08
    weight_scrape: float = 0.15
    weight_bid: float = 0.036
    user_deleted_rate: float = 0.0002
    user_activity_exponent: float = 1.3
    item_popularity_alpha: float = 1.1
    taste_concentration: float = 0.3
    declare_preferences_prob: float = 0.3
    bounce_prob: float = 0.4
    first_visit_bounce_prob: float = 0.7
    repeat_click_prob: float = 0.15
    deadline_prob: float = 0.4
    deadline_days: tuple[float, float] = (1.0, 5.0)
    strategy_break_prob: float = 0.002
    strategy_recover_prob: float = 0.01
    broken_success_prob: float = 0.02
    outcome_delay_days: tuple[float, float] = (1.0, 5.0)
    outcome_missing_prob: float = 0.05


@dataclass(slots=True)
class _Item:
    item_id: str
    title: str
    category: int
    tags: list[str]
    quality: float
    deadline: float | None
    retracted: bool = False


@dataclass(slots=True)
class _User:
    category_taste: list[float]
    tag_taste: dict[str, float]
    clicked: list[str] = field(default_factory=list)


def _words(text: str) -> list[str]:
    return [w.strip(".,;:!?()").lower() for w in text.split()]


class Simulator:
    """Generates the event stream; ground truth is readable through the public methods."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = cfg = config or SimConfig()
        self._rng = rng = random.Random(cfg.seed)
        self._now = cfg.start_ts
        self._n = 0
        self.domains = [f"site-{d}.example" for d in range(cfg.n_domains)]
        words = list(_TAG_WORDS) + [f"tag-{i}" for i in range(len(_TAG_WORDS), cfg.n_tags)]
        self.tags = words[: cfg.n_tags]
        # Each tag belongs mostly to one category, so tags and categories correlate.
        self._tags_of = [self.tags[c :: len(cfg.categories)] or self.tags for c in range(len(cfg.categories))]
        self._tag_home = {t: i % len(cfg.categories) for i, t in enumerate(self.tags)}
        self._users = [self._new_user() for _ in range(cfg.n_users)]
        ranks = list(range(cfg.n_users))
        rng.shuffle(ranks)  # so user-0 is not automatically the most active one
        self._activity = [1.0 / (r + 1) ** cfg.user_activity_exponent for r in ranks]
        self._cum_activity = list(accumulate(self._activity))
        self._seen: dict[int, None] = {}  # an ordered set: iteration order must not depend on hashing
        self._deleted: set[str] = set()
        self._items: dict[str, _Item] = {}
        self._live: list[_Item] = []
        self._queue: deque[dict[str, Any]] = deque()
        self._n_recs = 0
        self._base_success = {d: self._strategy_success() for d in self.domains}
        self.current_strategy = {d: max(p, key=p.__getitem__) for d, p in self._base_success.items()}
        self._broken: dict[str, dict[str, None]] = {d: {} for d in self.domains}
        self._profiles = [
            {"skills": rng.sample(_SKILLS, rng.randint(2, 7)), "experience": float(rng.randint(0, 20))}
            for _ in range(cfg.n_profiles)
        ]
        self._jobs: list[dict[str, Any]] = []
        self._job_budget: dict[str, float] = {}
        self._n_bids = 0
        self._outcomes: list[tuple[float, int, str, bool]] = []

    # -- the stream --------------------------------------------------------------------

    def events(self) -> Iterator[dict[str, Any]]:
        """Endless events; calling it again continues the same stream."""
        while True:
            yield self._next_event()

    def take(self, n: int) -> list[dict[str, Any]]:
        """The next ``n`` events."""
        return list(islice(self.events(), n))

    def _next_event(self) -> dict[str, Any]:
        cfg, rng = self.config, self._rng
        self._now += rng.expovariate(1.0 / cfg.mean_seconds_between_events)
        body = self._due_outcome()
        if body is None and rng.random() < cfg.user_deleted_rate:
            body = self._user_deleted()
        if body is None:
            kind = rng.choices(
                ("interaction", "item", "scrape_attempt", "bid"),
                weights=(cfg.weight_interaction, cfg.weight_item, cfg.weight_scrape, cfg.weight_bid),
            )[0]
            if kind == "interaction":
                body = self._interaction() or self._item()
            elif kind == "item":
                body = self._item()
            elif kind == "scrape_attempt":
                body = self._scrape_attempt()
            else:
                body = self._bid()
        event = {"type": body.pop("type"), "event_id": f"sim-{cfg.seed}-{self._n}", "ts": self._now}
        self._n += 1
        return event | body

    # -- users and interactions --------------------------------------------------------

    def _new_user(self) -> _User:
        rng, cfg = self._rng, self.config
        raw = [rng.gammavariate(cfg.taste_concentration, 1.0) + 1e-9 for _ in cfg.categories]
        taste = [x / sum(raw) for x in raw]
        tags = {t: taste[self._tag_home[t]] * rng.gammavariate(1.0, 1.0) for t in self.tags}
        top = max(tags.values()) or 1.0
        return _User(taste, {t: v / top for t, v in tags.items()})

    def affinity(self, user_id: str, item_id: str) -> float:
        """Ground truth: how much the user likes the item, in [0, 1]."""
        user, item = self._users[int(user_id.split("-")[1])], self._items[item_id]
        category = user.category_taste[item.category] / max(user.category_taste)
        tags = sum(user.tag_taste[t] for t in item.tags) / len(item.tags)
        return 0.75 * category + 0.25 * tags

    def _is_live(self, item: _Item) -> bool:
        return not item.retracted and (item.deadline is None or self._now < item.deadline)

    def _live_items(self) -> list[_Item]:
        self._live = [it for it in self._live if self._is_live(it)]
        return self._live

    def _interaction(self) -> dict[str, Any] | None:
        # A session is queued whole and drained one event per interaction slot, so sessions
        # interleave with other traffic; anything that became stale meanwhile is dropped.
        for _ in range(2):
            while self._queue:
                body = self._queue.popleft()
                stale = body["type"] == "interaction" and not self._is_live(self._items[body["item_id"]])
                if body["user_id"] not in self._deleted and not stale:
                    return body
            self._start_session()
        return None

    def _start_session(self) -> None:
        cfg, rng = self.config, self._rng
        live = self._live_items()
        if not live or not self._cum_activity or self._cum_activity[-1] <= 0:
            return
        u = rng.choices(range(cfg.n_users), cum_weights=self._cum_activity)[0]
        user, uid = self._users[u], f"user-{u}"
        bounce = cfg.bounce_prob
        if u not in self._seen:
            self._seen[u] = None
            bounce = cfg.first_visit_bounce_prob  # newcomers mostly look once and leave
            if rng.random() < cfg.declare_preferences_prob:
                self._queue.append({"type": "preference", "user_id": uid, "interests": self._declared(user)})
        queue = self._queue.append

        def act(item: _Item, action: str, **extra: Any) -> None:
            queue({"type": "interaction", "user_id": uid, "item_id": item.item_id, "action": action, **extra})

        if user.clicked and rng.random() < cfg.repeat_click_prob:
            again = self._items[rng.choice(user.clicked)]
            if self._is_live(again):
                act(again, "click")
        if rng.random() < bounce:  # arrived from a shared link: one look, then gone
            act(self._pick_items(uid, live, 1)[0], rng.choice(("view", "click")))
            return
        rec_id = f"rec-{cfg.seed}-{self._n_recs}"
        self._n_recs += 1
        shown = self._pick_items(uid, live, rng.randint(3, 10))
        for pos, item in enumerate(shown):
            act(item, "impression", rec_id=rec_id, position=pos)
        for pos, item in enumerate(shown):
            a = self.affinity(uid, item.item_id)
            p_click = min(0.95, 0.35 * a * math.sqrt(item.quality)) / (1.0 + 0.15 * pos)
            if rng.random() < p_click:
                act(item, "click", rec_id=rec_id, position=pos)
                user.clicked.append(item.item_id)
                self._follow_ups(act, item, a)
            elif rng.random() < 0.08 * (1.0 - a):
                act(item, rng.choice(("hide", "dislike")), rec_id=rec_id, position=pos)

    def _follow_ups(self, act: Callable[..., None], item: _Item, a: float) -> None:
        rng = self._rng
        if rng.random() < 0.4:
            act(item, "view")
        if rng.random() < 0.3 * a:
            act(item, "like")
        if rng.random() < 0.15 * a:
            act(item, "save")
        if rng.random() < 0.12:
            act(item, "rate", value=float(min(5, max(1, round(1 + 4 * a + rng.gauss(0, 0.7))))))
        if rng.random() < 0.1 * (1.0 - a):
            act(item, "dislike")

    def _pick_items(self, uid: str, live: list[_Item], n: int) -> list[_Item]:
        # Weighted sampling without replacement (Efraimidis-Spirakis): popular items that
        # match the taste are shown most, as a decent recommender would.
        keyed = [
            (self._rng.random() ** (1.0 / (it.quality * (0.1 + self.affinity(uid, it.item_id)) ** 2)), i)
            for i, it in enumerate(live)
        ]
        return [live[i] for _, i in sorted(keyed, reverse=True)[:n]]

    def _declared(self, user: _User) -> dict[str, float]:
        top = max(user.category_taste)
        ranked = sorted(range(len(self.config.categories)), key=lambda c: -user.category_taste[c])
        return {
            self.config.categories[c]: round(user.category_taste[c] / top, 2)
            for c in ranked[:3]
            if user.category_taste[c] >= 0.15 * top
        }

    def _user_deleted(self) -> dict[str, Any] | None:
        candidates = [u for u in self._seen if f"user-{u}" not in self._deleted]
        if not candidates:
            return None
        u = self._rng.choice(candidates)
        self._deleted.add(f"user-{u}")
        self._activity[u] = 0.0
        self._cum_activity = list(accumulate(self._activity))
        return {"type": "user_deleted", "user_id": f"user-{u}"}

    @property
    def deleted_users(self) -> frozenset[str]:
        """Users that were deleted and will emit nothing more."""
        return frozenset(self._deleted)

    # -- items -------------------------------------------------------------------------

    def _item(self) -> dict[str, Any]:
        cfg, rng = self.config, self._rng
        live = self._live_items()
        if len(live) >= cfg.n_items:
            victim = next((it for it in live if it.deadline is None), live[0])
            victim.retracted = True
            return self._item_body(victim)
        c = rng.randrange(len(cfg.categories))
        tags: list[str] = []
        n_tags = min(rng.randint(2, 4), len(self.tags))
        while len(tags) < n_tags:
            pool = self._tags_of[c] if rng.random() < 0.8 else self.tags
            tag = rng.choice(pool)
            if tag not in tags:
                tags.append(tag)
        open_ended = rng.random() >= cfg.deadline_prob
        deadline = None if open_ended else self._now + rng.uniform(*cfg.deadline_days) * DAY
        title = f"{rng.choice(_TITLE_WORDS)} {tags[0]} {cfg.categories[c]}"
        quality = rng.paretovariate(cfg.item_popularity_alpha)
        item = _Item(f"item-{len(self._items)}", title, c, tags, quality, deadline)
        self._items[item.item_id] = item
        self._live.append(item)
        return self._item_body(item)

    def _item_body(self, item: _Item) -> dict[str, Any]:
        category = self.config.categories[item.category]
        domain = self.domains[int(item.item_id.split("-")[1]) % len(self.domains)]
        body: dict[str, Any] = {
            "type": "item",
            "item_id": item.item_id,
            "title": item.title,
            "url": f"https://{domain}/{category}/{item.item_id}",
            "source": domain.split(".")[0],
            "domain": domain,
            "category": category,
            "tags": list(item.tags),
            "text": f"{item.title}. A {category} opportunity about {', '.join(item.tags)}.",
            "retracted": item.retracted,
            "attributes": {},
        }
        if item.deadline is not None:
            body["deadline"] = item.deadline
        return body

    def item_quality(self, item_id: str) -> float:
        """Ground truth: the item's hidden popularity (Pareto, at least 1)."""
        return self._items[item_id].quality

    # -- scraping ----------------------------------------------------------------------

    def _strategy_success(self) -> dict[str, float]:
        # One strategy works well, one is a decent fallback, the rest are poor: switching
        # away from a broken strategy pays, but only to the right one.
        rng, ranked = self._rng, list(self.config.strategies)
        rng.shuffle(ranked)
        p = [rng.uniform(0.9, 0.97), rng.uniform(0.7, 0.88)] + [rng.uniform(0.15, 0.6) for _ in ranked[2:]]
        return {s: p[ranked.index(s)] for s in self.config.strategies}

    def success_probability(self, domain: str, strategy: str) -> float:
        """Ground truth: the chance an attempt with this strategy succeeds on the domain now."""
        if strategy in self._broken[domain]:
            return self.config.broken_success_prob
        return self._base_success[domain][strategy]

    def best_strategy(self, domain: str) -> str:
        """Ground truth: the strategy with the highest success probability right now."""
        return max(self.config.strategies, key=lambda s: self.success_probability(domain, s))

    def is_broken(self, domain: str, strategy: str) -> bool:
        return strategy in self._broken[domain]

    def break_strategy(self, domain: str, strategy: str) -> None:
        """Make a strategy fail on a domain (as when a site changes its markup or blocks us)."""
        self._broken[domain][strategy] = None

    def recover(self, domain: str, strategy: str) -> None:
        """Give a broken strategy its old success probability back."""
        self._broken[domain].pop(strategy, None)

    def apply_switch(self, domain: str, strategy: str) -> None:
        """Point the domain's scrapers at another strategy (what a strategy_switch asks for)."""
        if strategy not in self.config.strategies:
            raise ValueError(f"unknown strategy {strategy!r}")
        self.current_strategy[domain] = strategy

    def _scrape_attempt(self) -> dict[str, Any]:
        cfg, rng = self.config, self._rng
        domain = rng.choice(self.domains)
        for s in cfg.strategies:  # fixed order keeps the draws deterministic
            if s in self._broken[domain] and rng.random() < cfg.strategy_recover_prob:
                self.recover(domain, s)
        strategy = self.current_strategy[domain]
        if rng.random() < cfg.strategy_break_prob:
            self.break_strategy(domain, strategy)
        success = rng.random() < self.success_probability(domain, strategy)
        body: dict[str, Any] = {"type": "scrape_attempt", "domain": domain, "strategy": strategy,
                                "success": success, "scraper_id": f"scraper-{rng.randrange(4)}"}
        if success:
            latency, found = rng.lognormvariate(math.log(900.0), 0.5), rng.lognormvariate(math.log(12.0), 0.6)
            return body | {"latency_ms": latency, "http_status": 200, "items_found": int(found)}
        error, status = rng.choice(_BLOCKED if self.is_broken(domain, strategy) else _FAILURES)
        latency = rng.lognormvariate(math.log(30_000.0 if error == "timeout" else 600.0), 0.3)
        body |= {"latency_ms": latency, "error_type": error, "items_found": 0}
        if status is not None:
            body["http_status"] = status
        return body

    # -- bids --------------------------------------------------------------------------

    def _bid(self) -> dict[str, Any]:
        cfg, rng = self.config, self._rng
        if not self._jobs or rng.random() < 0.35:
            skills = rng.sample(_SKILLS, rng.randint(2, 5))
            job_id = f"job-{len(self._jobs)}"
            filler = " ".join(rng.choices(_JOB_FILLER, k=rng.randint(4, 12)))
            self._job_budget[job_id] = round(rng.lognormvariate(math.log(600.0), 0.7), 2)
            self._jobs.append({
                "job_id": job_id,
                "job_title": f"{skills[0].replace('-', ' ').title()} work",
                "job_text": f"{filler}. Skills: {', '.join(skills)}.",
                # What a job post shows; the win model also uses it, but hides how.
                "job_budget": self._job_budget[job_id],
                "job_posted_at": self._now,
            })
        p = rng.randrange(cfg.n_profiles)
        profile = self._profiles[p]
        recent = self._jobs[-20:]
        # Freelancers mostly bid on jobs that need what they can do.
        weights = [1 + 3 * len(set(profile["skills"]) & set(_words(j["job_text"]))) for j in recent]
        job = rng.choices(recent, weights=weights)[0]
        budget = self._job_budget[job["job_id"]]
        bid = {
            "type": "bid",
            "bid_id": f"bid-{cfg.seed}-{self._n_bids}",
            "profile_id": f"profile-{p}",
            **job,
            "bid_text": " ".join(rng.sample(_BID_SENTENCES, rng.randint(1, len(_BID_SENTENCES)))),
            "amount": round(budget * rng.lognormvariate(0.0, 0.4), 2),
            "profile": {"skills": list(profile["skills"]), "experience": profile["experience"]},
        }
        self._n_bids += 1
        if rng.random() >= cfg.outcome_missing_prob:
            due = self._now + rng.uniform(*cfg.outcome_delay_days) * DAY
            won = rng.random() < self.true_win_probability(bid)
            heapq.heappush(self._outcomes, (due, self._n_bids, bid["bid_id"], won))
        return bid

    def _due_outcome(self) -> dict[str, Any] | None:
        if not self._outcomes or self._outcomes[0][0] > self._now:
            return None
        _, _, bid_id, won = heapq.heappop(self._outcomes)
        return {"type": "bid_outcome", "bid_id": bid_id, "won": won}

    def true_win_probability(self, bid: dict[str, Any]) -> float:
        """Ground truth: the chance the bid wins, from skill coverage, price, experience, effort."""
        job_words = set(_words(f"{bid.get('job_title') or ''} {bid.get('job_text') or ''}"))
        needed = [s for s in _SKILLS if s in job_words]
        profile = bid.get("profile") or {}
        covered = sum(s in job_words for s in profile.get("skills", []))
        coverage = covered / len(needed) if needed else 0.0
        amount = max(float(bid.get("amount") or 0.0), 1.0)
        budget = self._job_budget.get(str(bid.get("job_id")), amount)
        effort = min(len(_words(bid.get("bid_text") or "")), 80) / 80
        experience = float(profile.get("experience") or 0.0)
        z = -2.5 + 3.0 * coverage - 2.5 * math.log(amount / budget) + 0.08 * experience + 1.0 * effort
        return 1.0 / (1.0 + math.exp(-z))
