"""The worker's recommender: learns from each interaction, publishes fresh lists to Redis.

State and partitioning. Each worker owns a slice of the users (the interactions topic is
keyed by user_id), so per-user state — tastes, histories — lives with its partition.
Global state is handled explicitly:

* the **catalogue** is broadcast: every item event is appended to a Redis stream in the
  same atomic write that stores the item, and every worker follows that stream from its
  start, so each one knows every item whichever items partitions it owns;
* what users teach **every** user — items' counts, trending, co-engagement, sequences, and
  the steps of the learned blend — is learned from all of them: each worker learns its own
  users' events at once and publishes those facts (``HybridRecommender.shared``) to a Redis
  stream in the batch's atomic write; every worker follows that stream and learns the other
  workers' facts (``learn_shared``: sums and gradient steps, so order matters little). Each
  fact carries its interaction's position in the log (partition, offset, index), and each
  version keeps the highest position per partition it has counted, so a fact re-published
  after a crash, or an event learned again by its partition's next owner, counts once
  (docs/scale-out.md);
* the cold-start **popular** list is global, in one Redis sorted set (see
  ``streams/interactions.py``).

Per batch: every fresh event is scored test-then-train for the live quality figures,
learned, and counted into the user's profile counters; then each touched user's top-K
is recomputed once and written, with reasons, the model version and the time.
Lists are computed at the stream's event time, so a replay gives the lists a live
run gave.

Lifecycle. Redis effects (counters) are deduplicated by event id; the model side of an
event is gated by offsets instead (:class:`streams.pipeline.Learning`), because the model
lives in memory and is saved in snapshots tied to the offsets it learned up to. A
restarted worker loads the newest snapshot that covers its partitions and re-reads the
log from the snapshot's offsets (``WorkerContext.catch_up``), so it never starts cold and
never learns a record twice. Several *versions* learn the same stream: the champion that
serves and shadow challengers (``EDDY_RECS_CHALLENGERS``), each scored test-then-train on
the same targets; :func:`online_models.lifecycle.decide` promotes and rolls back, and an
admin can do either through the API (the ``serving`` hash, polled here).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from online_models.base import is_positive, signal_of
from online_models.drift import RARE_HITS, Finding, reaction_for
from online_models.evaluation import Score
from online_models.feed import learn_event
from online_models.hybrid import INT_PARAMS, HybridRecommender
from online_models.kernels import warm_up
from online_models.lifecycle import Decision, Policy, Window, decide
from online_models.popularity import Popularity
from schemas.envelope import MAX_ENVELOPE_EVENTS, partition_of
from schemas.events import AlertEvent, EventDecodeError, encode_event, validate_event
from schemas.keys import Keys
from schemas.settings import Settings
from schemas.topics import ALERTS, INTERACTIONS, TopicSpec
from streams.alerting import alert_event, model_health_from
from streams.app import OffsetGate
from streams.interactions import apply_user_event
from streams.pipeline import Effects, Learning, with_redis_retry, write_in_slices
from streams.replay import offsets_at
from streams.snapshots import SnapshotMeta, SnapshotStore, config_hash, write

log = logging.getLogger(__name__)

CATALOGUE_POLL_S = 0.2
REFRESH_SLICE_S = 0.05  # longest the list refresh holds the agent's lock at a time
SOURCES_POLL_S = 5.0
DISPLAY_FIELDS = ("title", "url", "category", "source", "domain", "tags", "deadline")
MODEL = "recommender"
SERVING_POLL_S = 1.0
COLD_START_EVERY_S = 1.0

REFLECTS = 20  # event ids a list names as the user's latest events it was computed after
ACTED_KEPT = 50  # items a user acted on lately, kept in their list's document for group lists
CHAMPION = "v1"
SLOTS = MAX_ENVELOPE_EVENTS  # positions per record of the log
STREAM_READ = 1000  # entries per read of the catalogue and item facts streams


@dataclass
class Version:
    """One live version of the recommender: its model and its test-then-train figures."""

    name: str
    model: HybridRecommender
    window: Window
    origin: str = "config"  # or "replay"
    created_at: float = field(default_factory=time.time)
    score: Score = field(default_factory=Score)
    since: dict[int, int] = field(default_factory=dict)  # partition -> first offset it learns
    # partition -> highest position (see `position`) whose item facts this version has
    # counted (its own learning or another worker's facts): one at or below is not again.
    counted: dict[int, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.name, "variant": "hybrid", "origin": self.origin, "params": self.model.params(),
            "config_hash": config_hash(self.model.params()), "created_at": self.created_at,
            "targets": self.score.targets, "hits": self.score.hits, "ndcg_sum": self.score.ndcg_sum,
            "window": {"targets": self.window.n, "hits": self.window.hits, "hr": self.window.rate},
        }


def encode_facts(facts: list[list]) -> bytes:
    """A batch's facts as stored in the stream: JSON, compressed (about 4x: the blend's
    gradients repeat their weight names).

    >>> decode_facts(encode_facts([[0, 5, "film-1", 3.0, 1.0, None]]))
    [[0, 5, 'film-1', 3.0, 1.0, None]]
    """
    return zlib.compress(orjson.dumps(facts), 1)


def decode_facts(raw: bytes) -> list[list]:
    return orjson.loads(zlib.decompress(raw))


def position(where: str) -> tuple[int, int]:
    """``partition:offset:index`` -> (partition, position): events in the order of the log,
    the index counting the events of one envelope record.

    >>> position("3:10:2")
    (3, 10002)
    """
    partition, offset, index = where.split(":", 2)
    return int(partition), int(offset) * SLOTS + int(index or 0)


def learn_counted(version: Version, event: Any, partition: int, pos: int) -> None:
    """Teach one version one event of the interactions log at ``partition``, ``pos``; what
    it teaches every user (item counts, co-engagement, the blend's step) is learned only if
    that position's facts were not (from another worker, before this one owned the
    partition)."""
    if event.type == "interaction":
        model = version.model
        fresh = pos > version.counted.get(partition, -1)
        if fresh:
            version.counted[partition] = pos
        model.learn_interaction(event.user_id, event.item_id, signal_of(event.action, event.value),
                                event.ts or 0.0, shared_state=fresh)
    else:
        learn_event(version.model, event)


def in_sample(event_id: str, share: float) -> bool:
    """A stable sample of events by id: the same events are scored on every replay.

    Scoring an event ranks the catalogue twice (Eddy and the baseline), which costs more
    than learning it; a sample of targets estimates HR and NDCG just as well.

    >>> sum(in_sample(f"e{i}", 0.25) for i in range(10_000))
    2467
    """
    return share >= 1.0 or zlib.crc32(event_id.encode()) % 10_000 < share * 10_000


class RecommenderService:
    """One worker's recommender, its catalogue copy and its live quality counters."""

    def __init__(self, settings: Settings) -> None:
        warm_up()  # the compiled featurisation, before the first event waits for it
        self.settings = settings
        self.policy = Policy(margin=settings.promotion_margin, window=settings.promotion_window,
                             drop=settings.rollback_drop, auto=settings.auto_promote)
        self.versions: dict[str, Version] = {CHAMPION: self._version(CHAMPION, {})}
        for n, overrides in enumerate(settings.recs_challengers, start=2):
            self.versions[f"v{n}"] = self._version(f"v{n}", overrides)
        self.serving = CHAMPION
        self.previous: str | None = None
        self.promoted_at: float | None = None  # the hit rate that got the serving version promoted
        self.since_change = 0  # targets scored since the serving version last changed
        self.targets_seen = 0
        self.unknown_targets = 0
        self.outbox: list[tuple[TopicSpec, bytes | None, bytes]] = []
        self.baseline = Popularity()
        self.baseline_score = Score()
        self.display: dict[str, dict[str, Any]] = {}
        self.ctr: dict[int, list[int]] = {}  # position -> [impressions, clicks]
        self.clock = 0.0  # latest event time seen
        self.gate = OffsetGate()
        self.owned: set[int] | None = None  # partitions of the interactions topic (None: not known yet)
        self.restored = False
        self.regained = False
        self.dirty = False  # learned something since the last snapshot
        # Users the batch touched, with the ids of their events it learned (newest last).
        self.touched: dict[str, list[str]] = {}
        self.cold_dirty = False  # fresh events were learned since the cold-start list was written
        self.cold_written = float("-inf")  # when it was (monotonic)
        self.cold_items: list = []  # what it held: a list that has not changed is not written again
        self.catalogue_id = "0-0"
        self.facts_id = "0-0"  # position in the item facts stream
        self.facts_out: list[list] = []  # [partition, position, *fact] to publish after the batch
        self.publish_facts = True  # off in `eddy replay`, which learns every partition itself
        self.facts_learned = False  # other workers' facts learned since the registry was written
        self.member = f"{socket.gethostname()}:{os.getpid()}"
        # Recently active users, newest last, with the ids their latest list reflects.
        self.active: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self.new_items = False
        self.refresh_queue: deque[str] = deque()  # users whose lists await a refresh
        # Held by the agent while it handles a batch and by the refresh while it writes, so
        # a refresh can never write back the list of a user a batch has just deleted.
        self.lock = asyncio.Lock()
        self.serving_request: dict[str, Any] | None = None  # to write to the serving hash
        self.applied_request_at = 0.0  # the newest serving request followed
        self.last_snapshot: dict[str, Any] | None = None
        # Drift on the serving version's online error (1 - hit) and on its targets' inputs,
        # and the CTR of served lists; a finding alerts and triggers the configured reaction.
        self.health = model_health_from(settings, MODEL, **RARE_HITS)
        self.ctr_batch = [0, 0]  # impressions, clicks of served lists since the last check
        self.grow: list[tuple[str, str]] = []  # (reaction, detail): versions to build

    def _version(self, name: str, overrides: dict[str, float]) -> Version:
        params = {k: (int(v) if k in INT_PARAMS else float(v)) for k, v in overrides.items()}
        return Version(name, HybridRecommender(**params), Window(self.settings.promotion_window))

    @property
    def model(self) -> HybridRecommender:
        """The serving version's model."""
        return self.versions[self.serving].model

    @property
    def scores(self) -> dict[str, Score]:
        return {"eddy": self.versions[self.serving].score, "popularity": self.baseline_score}

    # --- catalogue ----------------------------------------------------------------------

    def learn_catalogue_entry(self, raw: bytes) -> None:
        try:
            event = validate_event(orjson.loads(raw))
        except (orjson.JSONDecodeError, EventDecodeError) as exc:  # written by Eddy: should not happen
            log.error("unreadable catalogue entry skipped: %s", exc)
            return
        self.learn_item(event)

    def learn_item(self, event: Any) -> None:
        """Teach every version one item event of the catalogue."""
        # The stream's time moves with items too (never past the wall clock): lists
        # refreshed for a new item are computed at a time it exists, even when no
        # interaction has come since.
        self.clock = max(self.clock, min(event.ts or 0.0, time.time()))
        for version in self.versions.values():
            learn_event(version.model, event)
        learn_event(self.baseline, event)
        self.new_items = True
        self.dirty = True
        self.cold_dirty = self.cold_dirty or bool(self.active)  # lists are being served: this one too
        if event.retracted:
            self.display.pop(event.item_id, None)
        else:
            doc = event.model_dump(mode="json", exclude_none=True)
            self.display[event.item_id] = {f: doc[f] for f in DISPLAY_FIELDS if f in doc}

    async def catch_up(self, redis: Any, keys: Keys) -> int:
        """Learn everything the catalogue stream and the item facts stream gained since last
        time (one read for both); returns the catalogue entries read.

        Called before every batch of interactions (so items stored before the batch are
        known to it) and by a polling task (so new items reach lists between batches).
        Callers hold :attr:`lock`, so the positions in the streams only move forward.
        """
        total = 0
        positions = {keys.catalogue: self.catalogue_id}
        if self.restored and self.owned is not None:  # what it owns is known: the others' facts
            positions[keys.item_facts] = self.facts_id
        while positions:
            reply = await redis.xread(positions, count=STREAM_READ)
            full = set()
            for name, entries in reply or []:
                name = name.decode() if isinstance(name, bytes) else name
                for entry_id, fields in entries:
                    entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    if name == keys.catalogue:
                        self.learn_catalogue_entry(fields[b"item"])
                        self.catalogue_id = entry_id
                        total += 1
                    else:
                        if fields.get(b"from") != self.member.encode():  # its own: learned already
                            self.learn_facts(decode_facts(fields[b"facts"]))
                        self.facts_id = entry_id
                if len(entries) >= STREAM_READ:
                    full.add(name)
            positions = {name: (self.catalogue_id if name == keys.catalogue else self.facts_id) for name in full}
        return total

    def learn_facts(self, facts: list[list]) -> None:
        """Teach every version another worker's item facts ``[partition, position, *fact]``
        that it has not counted yet. Facts of the partitions this worker owns are skipped:
        it learns those events from the log, in order (a fact published by the partition's
        previous owner, or by this worker before a restart, would teach the future to the
        test-then-train scoring of the events it relearns)."""
        owned = self.owned or set()
        facts = [fact for fact in facts if fact[0] not in owned]
        for version in self.versions.values():
            counted = version.counted
            before = dict(counted)  # an event may have several facts, at one position
            todo = []
            for p, pos, *fact in facts:
                if pos > before.get(p, -1):
                    counted[p] = max(pos, counted.get(p, -1))
                    todo.append(fact)
            if todo:
                version.model.learn_shared(todo)
                self.dirty = self.facts_learned = True

    # --- learning -----------------------------------------------------------------------

    def effect(self, effects: Effects, event: Any, keys: Keys) -> None:
        """Per event new to Redis: the user's counters."""
        apply_user_event(effects, event, keys)
        if event.type == "interaction":
            self._profile_counters(effects, event, keys)

    def learn(self, effects: Effects, event: Any, keys: Keys, where: str) -> None:
        """Per event the models have not learned: live test-then-train scoring, learning."""
        p, pos = position(where)
        o = pos // SLOTS
        self.clock = max(self.clock, event.ts or 0.0)
        self.dirty = True
        if event.type == "user_deleted":
            for version in self.versions.values():
                version.model.forget_user(event.user_id)
            self.touched.pop(event.user_id, None)
            self.active.pop(event.user_id, None)
            return
        if event.type == "interaction":
            self._score_live(event)
        serving = self.model
        serving.sharing = self.publish_facts
        for version in self.versions.values():
            if o >= version.since.get(p, 0):
                learn_counted(version, event, p, pos)
        if self.publish_facts:
            self.facts_out.extend([p, pos, *fact] for fact in serving.shared())
        for version in self.versions.values():
            if version.model is not serving:
                version.model.shared()  # the serving version's facts speak for every version
        learn_event(self.baseline, event)
        self.touched.setdefault(event.user_id, []).append(event.event_id)
        self.active[event.user_id] = self.active.get(event.user_id, ())
        self.active.move_to_end(event.user_id)
        if len(self.active) > self.settings.refresh_active_users:
            self.active.popitem(last=False)

    def _score_live(self, event: Any) -> None:
        if event.rec_id is not None and event.position is not None:
            cell = self.ctr.setdefault(event.position, [0, 0])
            if event.action == "impression":
                cell[0] += 1
                self.ctr_batch[0] += 1
            elif event.action == "click":
                cell[1] += 1
                self.ctr_batch[1] += 1
        if not is_positive(event.action, event.value):
            return
        if not in_sample(event.event_id, self.settings.live_eval_share):
            return
        consumed = self.model.consumed_by(event.user_id)
        if event.item_id in consumed:
            return
        now = event.ts or self.clock
        if event.item_id not in self.display:
            self.unknown_targets += 1  # the item has not reached this worker's catalogue yet
        for version in self.versions.values():
            ranked = [s.item_id for s in version.model.rank(event.user_id, 10, now, exclude=consumed)]
            version.score.add(ranked, event.item_id)
            version.window.add(int(event.item_id in ranked))
        ranked = [s.item_id for s in self.baseline.rank(event.user_id, 10, now, exclude=consumed)]
        self.baseline_score.add(ranked, event.item_id)
        hit = self.versions[self.serving].window.outcomes[-1]
        findings = [self.health.observe_error(1.0 - hit, now)]
        published = self.model.published_at(event.item_id)
        age_h = (now - (now if published is None else published)) / 3600.0
        findings += self.health.observe_features({"item_age_h": age_h, "history": float(len(consumed))}, now)
        for finding in findings:
            if finding is not None:
                self.on_finding(finding)
        self.since_change += 1
        self.targets_seen += 1
        if len(self.versions) > 1:
            decision = decide(self.policy, {n: v.window for n, v in self.versions.items()},
                              serving=self.serving, previous=self.previous, since_change=self.since_change,
                              promoted_at=self.promoted_at)
            if decision is not None:
                self.switch(decision, by="policy")

    # --- health -------------------------------------------------------------------------

    def on_finding(self, finding: Finding) -> None:
        """Alert, and react as configured: ``reset`` adds a fresh challenger learning from
        here, ``challenger`` one retrained from the recent log; the policy decides whether
        either replaces the champion."""
        alert = alert_event(finding)
        log.warning("recommender health: %s", finding.detail)
        self.outbox.append((ALERTS, MODEL.encode(), encode_event(alert)))
        reaction = reaction_for(finding, self.settings.drift_reaction)
        if reaction != "alert":
            self.grow.append((reaction, finding.detail))

    def check_ctr(self) -> None:
        impressions, clicks = self.ctr_batch
        if impressions or clicks:
            self.ctr_batch = [0, 0]
            finding = self.health.observe_ctr(impressions, clicks, self.clock)
            if finding is not None:
                self.on_finding(finding)

    def fresh_version(self, reaction: str) -> Version:
        """A new challenger with the champion's parameters (its catalogue and, for a
        retrain, its recent log are taught by the caller)."""
        n = 1 + max((int(n[2:]) for n in self.versions if n.startswith("rt") and n[2:].isdigit()), default=0)
        for old in [n for n in self.versions if n.startswith("rt") and n not in (self.serving, self.previous)]:
            del self.versions[old]  # one drift challenger at a time
        version = Version(f"rt{n}", HybridRecommender(**self.model.params()), Window(self.settings.promotion_window),
                          origin=reaction)
        return version

    # --- which version serves -----------------------------------------------------------

    def switch(self, decision: Decision, *, by: str) -> None:
        """Serve ``decision.version`` from now on and queue an alert with the figures."""
        old = self.serving
        if decision.version == old or decision.version not in self.versions:
            return
        self.previous = old
        self.serving = decision.version
        self.promoted_at = self.versions[decision.version].window.rate
        self.since_change = 0
        self.new_items = True  # the refresh task re-ranks every active user with the new version
        log.warning("recommender %s: %s -> %s by %s: %s", decision.action, old, decision.version, by,
                    decision.detail)
        alert = AlertEvent(
            type="alert", event_id=f"{MODEL}:{decision.action}:{decision.version}:{self.targets_seen}",
            ts=time.time(), kind=f"model_{decision.action}", subject=MODEL,
            detail=f"{decision.action} {old} -> {decision.version} by {by}: {decision.detail}",
            severity="info" if decision.action == "promote" else "warning",
        )
        self.outbox.append((ALERTS, MODEL.encode(), encode_event(alert)))
        self.serving_request = {"version": self.serving, "by": by, "requested_at": time.time(),
                                "action": decision.action, "detail": decision.detail}

    def _profile_counters(self, effects: Effects, event: Any, keys: Keys) -> None:
        item = self.display.get(event.item_id)
        signal = signal_of(event.action, event.value)
        if item is None or event.action == "impression":
            return
        key = keys.user_counts(event.user_id)
        facets = [f"cat:{item['category']}"] if item.get("category") else []
        facets += [f"tag:{t}" for t in item.get("tags", [])]
        if item.get("source") or item.get("domain"):
            facets.append(f"src:{item.get('source') or item.get('domain')}")
        for facet in facets:
            effects.hincrby(key, f"n:{facet}", 1)
            if signal > 0:
                effects.hincrby(key, f"pos:{facet}", 1)
            if event.action == "rate":
                effects.hincrbyfloat(key, f"rsum:{facet}", float(event.value))
                effects.hincrby(key, f"rn:{facet}", 1)
        if event.action == "rate":
            effects.hincrbyfloat(key, "rating_sum", float(event.value))
            effects.hincrby(key, "rating_n", 1)

    # --- publishing ---------------------------------------------------------------------

    def recommendations(self, user_id: str, reflects: Sequence[str] = ()) -> dict[str, Any]:
        """The document served for a user: top-K with scores, reasons and item fields, and
        ``reflects``, the ids of the user's latest events learned before it was computed
        (so a client can tell when its own action has reached the list)."""
        # Stored in plain rank order; the API applies filters and the diversity guard at
        # the length it serves.
        chosen = self.model.rank(user_id, self.settings.recs_k, self.clock, exclude=self.model.consumed_by(user_id))
        return {
            "user_id": user_id,
            "items": [
                {"item_id": s.item_id, "score": s.score, "reason": s.reason, "item": self.display.get(s.item_id, {})}
                for s in chosen
            ],
            "model": "hybrid",
            "model_version": f"{self.serving}.{self.model.version}",
            "computed_at": time.time(),
            "event_time": self.clock,
            "reflects": list(reflects),
            # Not served: what a group list leaves out for this member (the API's group route).
            "acted": self.model.recent_consumed(user_id, ACTED_KEPT),
        }

    def finish(self, effects: Effects, fresh: Sequence[Any], keys: Keys) -> None:
        """After a batch: one fresh list per touched user, and the live quality figures."""
        self.check_ctr()
        for user_id, ids in self.touched.items():
            reflects = tuple(ids[-REFLECTS:])
            if user_id in self.active:
                self.active[user_id] = reflects
            effects.set_soon(keys.recs(user_id), orjson.dumps(self.recommendations(user_id, reflects)))
        # Fresh events (not a replay of what was applied): the cold-start list follows them.
        self.cold_dirty = self.cold_dirty or bool(self.touched)
        self.touched.clear()
        if self.facts_out:
            oldest = int((time.time() - self.settings.item_facts_retention_s) * 1000)
            effects.xadd(keys.item_facts, {"from": self.member, "facts": encode_facts(self.facts_out)},
                         minid=f"{oldest}-0")
            self.facts_out = []
        if (cold := self.cold_start_doc()) is not None:
            effects.set_soon(keys.popular_list, cold)
        effects.hset(keys.models, f"recs:{self.member}", orjson.dumps(self.quality()))
        effects.hset(keys.registry, f"{MODEL}:{self.member}", orjson.dumps(self.registry()))
        if self.serving_request is not None:
            effects.hset(keys.serving, MODEL, orjson.dumps(self.serving_request))
            self.serving_request = None

    def cold_start_doc(self) -> bytes | None:
        """The list served to users Eddy knows nothing about, from the model's new-user blend,
        when the model learned since it was last written (at most once per
        ``COLD_START_EVERY_S``); None when there is nothing to write."""
        now = time.monotonic()
        if not self.cold_dirty or now - self.cold_written < COLD_START_EVERY_S:
            return None
        self.cold_dirty, self.cold_written = False, now
        chosen = self.model.cold_start(self.settings.popular_k, self.clock)
        items = [[s.item_id, s.score, s.reason] for s in chosen]
        if items == self.cold_items:
            return None
        self.cold_items = items
        return orjson.dumps({
            "items": [{"item_id": s.item_id, "score": s.score, "reason": s.reason, "item": self.display.get(s.item_id, {})}
                      for s in chosen],
            "model": "hybrid",
            "model_version": f"{self.serving}.{self.model.version}",
            # Event time: a replay of the same log writes the same bytes (wall-clock freshness
            # is the recommender's, in its quality figures).
            "updated_at": self.clock,
        })

    def refresh_commands(self, keys: Keys, budget_s: float = REFRESH_SLICE_S) -> list[tuple[Any, ...]]:
        """When the catalogue changed, fresh lists for the recently active users (newest
        first), so a new item reaches the users it suits before anyone clicks it.

        Returns one slice of at most ``budget_s`` of ranking: the caller holds the lock the
        agent needs, so thousands of users are refreshed a slice at a time, between batches,
        instead of stalling every interaction behind them.
        """
        if self.new_items:
            self.new_items = False
            self.refresh_queue = deque(reversed(self.active))  # a newer change restarts the round
        out = []
        pending = self.cold_dirty
        if (cold := self.cold_start_doc()) is not None:  # a catalogue change with no batch since
            out.append(("SET", keys.popular_list, cold))
        if pending and not self.cold_dirty:  # computed (changed or not): the registry says so
            out.append(("HSET", keys.registry, f"{MODEL}:{self.member}", orjson.dumps(self.registry())))
        deadline = time.perf_counter() + budget_s
        while self.refresh_queue and time.perf_counter() < deadline:
            user_id = self.refresh_queue.popleft()
            reflects = self.active.get(user_id)
            if reflects is not None:  # not deleted meanwhile
                out.append(("SET", keys.recs(user_id), orjson.dumps(self.recommendations(user_id, reflects))))
        return out

    def quality(self) -> dict[str, Any]:
        """Mergeable counters: the API sums them over workers."""
        return {
            "model": "hybrid",
            "model_version": f"{self.serving}.{self.model.version}",
            "serving": self.serving,
            "k": 10,
            "scores": {
                name: {"targets": s.targets, "hits": s.hits, "ndcg_sum": s.ndcg_sum}
                for name, s in self.scores.items()
            },
            "ctr_by_position": {str(p): {"impressions": i, "clicks": c} for p, (i, c) in sorted(self.ctr.items())},
            "users": self.model.n_users,
            "items": len(self.display),
            "weights": self.model.weights(),  # the learned blend of the serving version
            "targets_on_unknown_items": self.unknown_targets,
            "updated_at": time.time(),
        }

    def registry(self) -> dict[str, Any]:
        """This worker's versions, their figures and roles, for ``GET /api/models``."""
        def role(name: str) -> str:
            return "champion" if name == self.serving else "previous" if name == self.previous else "challenger"

        return {
            "name": MODEL, "serving": self.serving, "previous": self.previous, "promoted_at_hr": self.promoted_at,
            "targets_since_change": self.since_change,
            "policy": {"auto": self.policy.auto, "margin": self.policy.margin, "window": self.policy.window,
                       "rollback_drop": self.policy.drop},
            "versions": [v.summary() | {"role": role(n), "serving": n == self.serving}
                         for n, v in self.versions.items()],
            "baseline": {"targets": self.baseline_score.targets, "hits": self.baseline_score.hits,
                         "ndcg_sum": self.baseline_score.ndcg_sum},
            "offsets": {str(p): o for p, o in sorted(self.gate.next.items())},
            # How far the serving version has counted each partition's item facts (its own
            # partitions' as it learns them, the others' from the facts stream).
            "item_facts": {"position": self.facts_id,
                           "counted": {str(p): pos // SLOTS
                                       for p, pos in sorted(self.versions[self.serving].counted.items())}},
            "snapshot": self.last_snapshot,
            "health": self.health.summary(),
            # Fresh events learned since the cold-start list was last computed (it is, at
            # most once a second, by the batch or the refresh timer).
            "cold_start_pending": self.cold_dirty,
            "event_time": self.clock,
            "updated_at": time.time(),
        }

    # --- snapshots ------------------------------------------------------------------------

    def snapshot(self, topic: str) -> tuple[SnapshotMeta, bytes]:
        """The whole learned state and the offsets it stands for (call under :attr:`lock`)."""
        state = {
            "versions": self.versions, "serving": self.serving, "previous": self.previous,
            "promoted_at": self.promoted_at, "since_change": self.since_change, "targets_seen": self.targets_seen,
            "baseline": self.baseline, "baseline_score": self.baseline_score, "display": self.display,
            "ctr": self.ctr, "clock": self.clock, "catalogue_id": self.catalogue_id, "facts_id": self.facts_id,
            "active": list(self.active), "health": self.health, "cold_items": self.cold_items,
        }
        body = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        meta = SnapshotMeta(
            model=MODEL, version=self.serving, seq=0, created_at=time.time(),
            offsets={topic: {str(p): o for p, o in self.gate.next.items()}},
            metrics=self.registry(), params=self.model.params(), config_hash=config_hash(self.model.params()),
            writer=self.member, extra={"catalogue_id": self.catalogue_id, "versions": list(self.versions)},
        )
        self.dirty = False
        return meta, body

    def restore(self, meta: SnapshotMeta, body: bytes, topic: str) -> None:
        """Resume from a snapshot: its versions, and its offsets for the partitions owned."""
        state = pickle.loads(body)
        configured = self.versions
        self.versions = state["versions"]
        for name, version in configured.items():
            if name not in self.versions:
                # A challenger configured after the snapshot: it learns from here on.
                self.versions[name] = version
            elif version.model.params() != self.versions[name].model.params():
                log.warning("snapshot's %s was built with %s, the settings say %s: the snapshot's model serves "
                            "until `eddy replay` rebuilds it", name, self.versions[name].model.params(),
                            version.model.params())
        self.serving, self.previous = state["serving"], state["previous"]
        self.promoted_at, self.since_change = state["promoted_at"], state["since_change"]
        self.targets_seen = state["targets_seen"]
        self.baseline, self.baseline_score = state["baseline"], state["baseline_score"]
        self.display, self.ctr, self.clock = state["display"], state["ctr"], state["clock"]
        self.catalogue_id = state["catalogue_id"]
        self.facts_id = state.get("facts_id", "0-0")
        for version in self.versions.values():
            version.__dict__.setdefault("counted", {})  # snapshots from before workers shared
        self.active = OrderedDict((u, ()) for u in state["active"])
        self.cold_items = state.get("cold_items", [])
        self.health = state.get("health", self.health)
        self.gate.next = {int(p): o for p, o in meta.offsets.get(topic, {}).items()}
        for name in configured:  # those new here learn from the snapshot's offsets on
            if not self.versions[name].since and name not in state["versions"]:
                self.versions[name].since = dict(self.gate.next)
        log.info("recommender resumed from snapshot %s (%s, %d versions, serving %s, offsets %s)",
                 meta.seq, meta.path, len(self.versions), self.serving, meta.offsets.get(topic))

    def keep_partitions(self, owned: set[int]) -> int:
        """Drop the users of partitions this worker no longer owns; returns how many."""
        partitions = range(self.settings.partitions)
        dropped = 0
        for user_id in self.versions[self.serving].model.user_ids():
            if partition_of(user_id.encode(), partitions) not in owned:
                for version in self.versions.values():
                    version.model.forget_user(user_id)
                self.active.pop(user_id, None)
                self.touched.pop(user_id, None)
                dropped += 1
        self.gate.keep(owned)
        for version in self.versions.values():
            version.since = {p: o for p, o in version.since.items() if p in owned}
        return dropped


def register(ctx) -> None:  # noqa: ANN001 - streams.app.WorkerContext (import cycle)
    service = RecommenderService(ctx.settings)
    store = SnapshotStore(Path(ctx.settings.snapshot_dir) / ctx.settings.consumer_group, keep=ctx.settings.snapshot_keep)
    topic = INTERACTIONS.full_name(ctx.settings)
    partitions = range(ctx.settings.partitions)

    async def catch_up() -> None:
        await with_redis_retry("catalogue", lambda: service.catch_up(ctx.redis, ctx.keys))

    async def before() -> None:
        # Called with the lock held, ahead of every batch.
        if not service.restored and service.owned is not None:
            found = await asyncio.to_thread(store.latest, MODEL, topic=topic, partitions=service.owned)
            if found is not None:
                service.restore(*found, topic)
            service.restored = True
            service.regained = True
        if service.regained and service.owned is not None:
            service.regained = False
            dropped = service.keep_partitions(service.owned)
            if dropped:
                log.info("dropped %d users of partitions now owned by other workers", dropped)
        await catch_up()

    async def emit() -> None:
        if service.outbox:
            outbox, service.outbox = service.outbox, []
            await ctx.send_all(outbox)

    ctx.consume(
        INTERACTIONS, service.effect, name="learn_from_interactions", finish=service.finish, before=before,
        lock=service.lock, emit=emit, learn=service.learn, gate=service.gate,
    )

    @ctx.app.on_partitions_assigned.connect
    async def take_partitions(app: Any, assigned: set, **kwargs: Any) -> None:
        service.owned = {tp.partition for tp in assigned if tp.topic == topic}
        service.regained = True

    async def save_snapshot() -> None:
        async with service.lock:
            if not service.restored or not service.dirty:
                return
            meta, body = service.snapshot(topic)
        saved = await write(store, meta, body)
        service.last_snapshot = {"seq": saved.seq, "version": saved.version, "created_at": saved.created_at,
                                 "offsets": saved.offsets, "size": saved.size, "path": saved.path,
                                 "writer": saved.writer, "libraries": saved.libraries}

    if ctx.settings.snapshot_interval_s > 0:
        @ctx.app.timer(interval=ctx.settings.snapshot_interval_s)
        async def snapshot_recommender() -> None:
            await save_snapshot()

    @ctx.app.on_before_shutdown.connect
    async def snapshot_on_shutdown(app: Any, **kwargs: Any) -> None:
        await save_snapshot()

    async def learn_catalogue(version: Version, after: str) -> None:
        """Teach one version the catalogue stream's entries after ``after``, up to where
        the other versions are."""
        if service.catalogue_id == "0-0":
            return
        for _, fields in await ctx.redis.xrange(ctx.keys.catalogue, min=f"({after}", max=service.catalogue_id):
            learn_event(version.model, validate_event(orjson.loads(fields[b"item"])))

    async def learn_log(version: Version, ranges: dict[int, tuple[int, int | None]], gate: Any) -> None:
        """Teach one version the interactions of ``ranges`` from the log."""
        def learn_into(effects: Effects, event: Any, keys: Keys, where: str) -> None:
            learn_counted(version, event, *position(where))

        await ctx.relearn(topic, frozenset(INTERACTIONS.types), ranges, Learning(learn_into, gate))

    async def adopt(name: str) -> bool:
        """Bring a version built elsewhere (``eddy replay``) into this worker: load its
        snapshot, teach it what the log gained since, then let it learn with the others."""
        found = await asyncio.to_thread(store.latest, MODEL, version=name)
        if found is None:
            log.error("version %s of the recommender was asked to serve but has no snapshot in %s",
                      name, ctx.settings.snapshot_dir)
            return False
        meta, body = found
        state = pickle.loads(body)
        version: Version = state["versions"][name]
        owned = service.owned or set()
        for user_id in version.model.user_ids():
            if partition_of(user_id.encode(), partitions) not in owned:
                version.model.forget_user(user_id)
        # The catalogue it has not seen yet, and the log between its offsets and the workers'.
        await learn_catalogue(version, meta.extra.get("catalogue_id", "0-0"))
        its = {int(p): o for p, o in meta.offsets.get(topic, {}).items()}
        version.counted = {p: o * SLOTS - 1 for p, o in its.items()}  # it learned every partition up to there
        ranges = {p: (its.get(p, 0), service.gate.gate(p)) for p in owned if its.get(p, 0) < service.gate.gate(p)}
        await learn_log(version, ranges, lambda p: its.get(p, 0))
        version.since = {p: o for p, o in its.items() if p in owned and o > service.gate.gate(p)}
        version.origin = "replay"
        service.versions[name] = version
        log.info("version %s adopted from snapshot %s (caught up %s)", name, meta.path, ranges)
        return True

    @ctx.app.timer(interval=SERVING_POLL_S)
    async def follow_serving() -> None:
        # What an admin asked for (POST /api/models/recommender/promote|rollback), or what
        # another worker's policy decided: every worker serves the same version.
        raw = await with_redis_retry("serving", lambda: ctx.redis.hget(ctx.keys.serving, MODEL))
        if raw is None:
            return
        request = orjson.loads(raw)
        async with service.lock:
            if not service.restored or request.get("requested_at", 0) <= service.applied_request_at:
                return
            service.applied_request_at = request["requested_at"]
            name = request["version"]
            if name == service.serving:
                return
            if name not in service.versions and not await adopt(name):
                return
            service.switch(Decision(request.get("action", "promote"), name,
                                    request.get("detail") or f"asked by {request.get('by', 'an admin')}"),
                           by=request.get("by", "admin"))
            service.serving_request = None  # it came from the hash; nothing to write back
            await emit()
            doc = orjson.dumps(service.registry())
        await with_redis_retry("registry", lambda: ctx.redis.hset(ctx.keys.registry, f"{MODEL}:{service.member}", doc))

    @ctx.app.task
    async def react_to_drift() -> None:
        # Builds the challenger a drift reaction asked for: the whole catalogue, and for a
        # retrain the last EDDY_RETRAIN_WINDOW_S of the log, then it learns with the others.
        while True:
            await asyncio.sleep(1.0)
            if not service.grow:
                continue
            async with service.lock:
                reaction, detail = service.grow.pop(0)
                service.grow.clear()  # one rebuild answers every finding queued meanwhile
                version = service.fresh_version(reaction)
                await learn_catalogue(version, "0-0")
                owned = sorted(service.owned or ())
                if reaction == "challenger" and owned:
                    begin = await offsets_at(ctx.settings, topic, owned, service.clock - ctx.settings.retrain_window_s)
                    ranges = {p: (begin[p], service.gate.gate(p)) for p in owned if begin[p] < service.gate.gate(p)}
                    await learn_log(version, ranges, lambda p: 0)
                version.since = dict(service.gate.next)
                # Other workers' facts from the stream's current position on; the log above
                # was its own partitions' share.
                version.counted = {p: o * SLOTS - 1 for p, o in service.gate.next.items()}
                service.versions[version.name] = version
                log.warning("drift reaction %s: challenger %s added (%s)", reaction, version.name, detail)

    @ctx.app.task
    async def follow_catalogue() -> None:
        while True:
            doc = None
            async with service.lock:
                await catch_up()
                if service.facts_learned and service.restored:  # show how far it has counted
                    service.facts_learned = False
                    doc = orjson.dumps(service.registry())
            if doc is not None:
                await with_redis_retry("registry", lambda d=doc: ctx.redis.hset(
                    ctx.keys.registry, f"{MODEL}:{service.member}", d))
            await asyncio.sleep(CATALOGUE_POLL_S)

    @ctx.app.timer(interval=SOURCES_POLL_S)
    async def follow_source_reliability() -> None:
        # Written by the scraping agents (streams/scraping.py): items of sources whose
        # scrapers fail or return odd shapes are ranked lower.
        raw = await with_redis_retry("sources", lambda: ctx.redis.hgetall(ctx.keys.sources))
        weights = {k.decode(): float(orjson.loads(v)["reliability"]) for k, v in raw.items()}
        async with service.lock:
            for version in service.versions.values():
                version.model.set_reliability(weights)

    @ctx.app.task
    async def refresh_lists() -> None:
        while True:
            async with service.lock:
                await write_in_slices(ctx.redis, service.refresh_commands(ctx.keys), "refresh")
            # Between slices the agent takes the lock; a round done, wait for the next change.
            await asyncio.sleep(0.005 if service.refresh_queue else ctx.settings.refresh_interval_s)
