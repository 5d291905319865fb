"""Bids: scored when placed, learned from when their outcome lands days later.

Bids and outcomes share the ``bids`` topic, keyed by ``bid_id``, so a bid and its outcome
meet in one worker. On a bid the worker computes its features (:class:`BidFeaturizer`),
scores it and stores score, features and expiry in ``bid:{bid_id}``, with the bid in the
``bids:pending`` sorted set. On its outcome the model learns from exactly the stored
features, and the score given at placement is compared with the outcome (progressive
validation, beside the profile's historical win rate). Pending bids live in memory and
in Redis; a bid without an outcome after ``EDDY_BID_EXPIRY_S`` (event time) expires, so
memory stays bounded; a later outcome for it, like one for a bid never seen, is
dead-lettered with the reason. After a restart or a rebalance the pending bids come back
with the model's snapshot and the catch-up from the log (below), so outcomes still learn
from the features scored with.

Profile history and job statistics are kept by each worker for the bids it owns (a
sample of every profile's bids when there are several workers, as trending is for the
recommender) and written to Redis, with the model's weights, so the API can score a draft
bid with the same code.

Lifecycle, as for the recommender (see ``streams/recommend.py``): everything above —
model, featurizer, pending bids, metrics — is the model's side of the stream, learned
under the offset gate and saved in snapshots tied to the offsets; a restarted worker loads
the newest snapshot and re-reads the log from its offsets, so it neither starts cold nor
learns an outcome twice, and pending bids come back with it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import pickle
import socket
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from online_models.bids import BidFeaturizer, BidScores, WinModel
from online_models.drift import reaction_for
from schemas.envelope import partition_of
from schemas.events import encode_event
from schemas.keys import Keys
from schemas.settings import Settings
from schemas.topics import ALERTS, BIDS
from streams.alerting import alert_event, model_health_from
from streams.app import OffsetGate
from streams.pipeline import Effects, Rejected, with_redis_retry
from streams.snapshots import SnapshotMeta, SnapshotStore, config_hash, write

log = logging.getLogger(__name__)

FINISHED_KEPT = 200_000  # resolved or expired bid ids remembered, to say why an outcome is refused
SNAPSHOT_EVERY_S = 1.0
MODEL = "bids"
#: What a snapshot of the bid service holds: the model and everything it learns from.
STATE = ("featurizer", "model", "scores", "baseline_scores", "pending", "deadlines", "finished", "clock", "expired",
         "health")
#: Inputs whose drift is watched (the rest are word and skill indicators).
WATCHED = ("log_amount", "amount_vs_budget", "amount_vs_other_bids", "other_bids", "skill_coverage",
           "profile_win_rate", "profile_bids_30d")


class BidService:
    """One worker's bid model, its pending bids and its live validation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.featurizer = BidFeaturizer()
        self.model = WinModel()
        self.scores = BidScores(window=settings.bid_metrics_window)
        self.baseline_scores = BidScores(window=settings.bid_metrics_window)
        self.pending: dict[str, dict[str, Any]] = {}
        self.deadlines: list[tuple[float, str]] = []  # heap of (placed at, bid), pending or not
        self.finished: OrderedDict[str, tuple[str, float]] = OrderedDict()  # bid -> (what, when)
        self.clock = 0.0
        self.stale = True
        self.owned: set[int] | None = None  # partitions of the bids topic (None: not known yet)
        self.profiles: set[str] = set()
        self.jobs: set[str] = set()
        self.expired = 0
        self.dirty = False  # the model changed since its weights were last published
        self.learned_since_snapshot = False
        self.member = f"{socket.gethostname()}:{os.getpid()}"
        self.lock = asyncio.Lock()
        self.gate = OffsetGate()
        self.restored = False
        # Drift on the online error |won - p| and on the main inputs; a finding alerts (and
        # with EDDY_DRIFT_REACTION=reset starts the model afresh).
        self.health = model_health_from(settings, MODEL, features=list(WATCHED))
        self.outbox: list[tuple[Any, bytes | None, bytes]] = []

    # --- snapshots ------------------------------------------------------------------------

    def snapshot(self, topic: str) -> tuple[SnapshotMeta, bytes]:
        """The learned state and the offsets it stands for (call under :attr:`lock`)."""
        body = pickle.dumps({name: getattr(self, name) for name in STATE}, protocol=pickle.HIGHEST_PROTOCOL)
        params = {"optimizer": "AdaGrad", "bid_expiry_s": self.settings.bid_expiry_s}
        meta = SnapshotMeta(
            model=MODEL, version="v1", seq=0, created_at=time.time(),
            offsets={topic: {str(p): o for p, o in self.gate.next.items()}},
            metrics=self.quality(), params=params, config_hash=config_hash(params), writer=self.member,
        )
        self.learned_since_snapshot = False
        return meta, body

    def restore(self, meta: SnapshotMeta, body: bytes, topic: str) -> None:
        state = pickle.loads(body)  # noqa: S301 - written by Eddy's own workers into its own folder
        for name in STATE:
            setattr(self, name, state[name])
        self.gate.next = {int(p): o for p, o in meta.offsets.get(topic, {}).items()}
        log.info("bid model resumed from snapshot %s (%s): %d learned, %d pending, offsets %s", meta.seq,
                 meta.path, self.model.learned, len(self.pending), meta.offsets.get(topic))

    def keep_partitions(self, owned: set[int]) -> None:
        """Drop pending bids of partitions another worker now owns (it rebuilds them)."""
        partitions = range(self.settings.partitions)
        for bid_id in [b for b in self.pending if partition_of(b.encode(), partitions) not in owned]:
            del self.pending[bid_id]
        self.gate.keep(owned)

    # --- the batch path -------------------------------------------------------------------

    def learn(self, effects: Effects, event: Any, keys: Keys, where: str) -> None:
        """Score a bid or learn from an outcome; Redis gets what it produced when the event
        is new to it (see :class:`streams.pipeline.Learning`)."""
        self.learned_since_snapshot = True
        if event.type == "bid":
            self._bid(effects, event, keys)
        else:
            self._outcome(effects, event, keys)

    def _bid(self, effects: Effects, event: Any, keys: Keys) -> None:
        if event.bid_id in self.pending or event.bid_id in self.finished:
            raise Rejected(f"bid {event.bid_id!r} was already placed; a bid is placed once")
        ts = event.ts
        bid = event.model_dump(mode="json", exclude_none=True)
        x = self.featurizer.learn_bid(bid, ts)
        p = self.model.predict_one(x)
        baseline = self.featurizer.baseline(event.profile_id, ts)
        self.clock = max(self.clock, ts)
        self.pending[event.bid_id] = {"x": x, "p": p, "baseline": baseline, "ts": ts, "profile_id": event.profile_id}
        heapq.heappush(self.deadlines, (ts, event.bid_id))
        key = keys.bid(event.bid_id)
        effects.hset(key, mapping={
            "bid": orjson.dumps(bid), "placed_at": ts, "score": p, "baseline": baseline,
            "model_version": f"v{self.model.version}.{self.model.learned}", "features": orjson.dumps(x),
            "profile_id": event.profile_id, "expires_at": ts + self.settings.bid_expiry_s,
        })
        effects.zadd(keys.bids_pending, {event.bid_id: ts})
        self.profiles.add(event.profile_id)
        if event.job_id is not None:
            self.jobs.add(event.job_id)

    def _outcome(self, effects: Effects, event: Any, keys: Keys) -> None:
        entry = self.pending.get(event.bid_id)
        if entry is None:
            what = self.finished.get(event.bid_id)
            if what is None:
                raise Rejected(f"outcome for unknown bid {event.bid_id!r}")
            if what[0] == "expired":
                raise Rejected(f"outcome for bid {event.bid_id!r} that expired at {what[1]:.0f}: "
                               f"no outcome within {self.settings.bid_expiry_s:.0f} s of its placement")
            raise Rejected(f"bid {event.bid_id!r} already has an outcome")
        ts = event.ts
        del self.pending[event.bid_id]
        self._finish(event.bid_id, "outcome", ts)
        # Exactly the features it was scored with: what the model would have known then.
        self.model.learn_one(entry["x"], event.won)
        self.scores.update(event.won, entry["p"])
        self.baseline_scores.update(event.won, entry["baseline"])
        self.featurizer.learn_outcome(entry["profile_id"], event.won, ts)
        for finding in [self.health.observe_error(abs(float(event.won) - entry["p"]), ts),
                        *self.health.observe_features(entry["x"], ts)]:
            if finding is not None:
                self.on_finding(finding)
        self.profiles.add(entry["profile_id"])
        self.clock = max(self.clock, ts)
        key = keys.bid(event.bid_id)
        effects.hset(key, mapping={"won": int(event.won), "outcome_at": ts, "delay_s": ts - entry["ts"]})
        effects.expire(key, self.settings.bid_retention_s)
        effects.zrem(keys.bids_pending, event.bid_id)

    def on_finding(self, finding: Any) -> None:
        log.warning("bid model health: %s", finding.detail)
        self.outbox.append((ALERTS, MODEL.encode(), encode_event(alert_event(finding))))
        if reaction_for(finding, self.settings.drift_reaction) == "reset":
            log.warning("bid model reset after drift (EDDY_DRIFT_REACTION=reset)")
            self.model = WinModel()
        # "challenger": the bid model has no challengers; the alert is the reaction.

    def _finish(self, bid_id: str, what: str, ts: float) -> None:
        self.finished[bid_id] = (what, ts)
        if len(self.finished) > FINISHED_KEPT:
            self.finished.popitem(last=False)

    def expire(self, effects: Effects, keys: Keys) -> int:
        """Drop bids placed longer than the expiry ago (event time); returns how many."""
        cutoff = self.clock - self.settings.bid_expiry_s
        gone = []
        # A heap by placement time: partitions interleave, so arrival order is not time order.
        while self.deadlines and self.deadlines[0][0] < cutoff:
            _, bid_id = heapq.heappop(self.deadlines)
            if bid_id in self.pending:  # else its outcome came first
                gone.append(bid_id)
        for bid_id in gone:
            entry = self.pending.pop(bid_id)
            expired_at = entry["ts"] + self.settings.bid_expiry_s
            self._finish(bid_id, "expired", expired_at)
            effects.hset(keys.bid(bid_id), mapping={"expired_at": expired_at})
            effects.expire(keys.bid(bid_id), self.settings.bid_retention_s)
        if gone:
            effects.zrem(keys.bids_pending, *gone)
            self.expired += len(gone)
        return len(gone)

    def finish(self, effects: Effects, fresh: Sequence[Any], keys: Keys) -> None:
        """After a batch: expiries, the histories the API scores drafts with, the figures."""
        self.expire(effects, keys)
        f = self.featurizer
        for profile_id in self.profiles:
            history = f.profiles.get(profile_id)
            if history is not None:
                effects.set(keys.bid_profile(profile_id), orjson.dumps(history.to_state()),
                            ex=self.settings.bid_retention_s)
        for job_id in self.jobs:
            job = f.jobs.get(job_id)
            if job is not None:
                effects.set(keys.bid_job(job_id), orjson.dumps(job.to_state()), ex=self.settings.bid_retention_s)
        self.profiles.clear()
        self.jobs.clear()
        effects.hset(keys.models, f"bids:{self.member}", orjson.dumps(self.quality()))
        self.dirty = True

    def snapshot_weights(self) -> bytes | None:
        """The model's weights for draft scoring, when they changed since the last call."""
        if not self.dirty:
            return None
        self.dirty = False
        return orjson.dumps(
            self.model.snapshot() | {"skills": sorted(self.featurizer.skills), "updated_at": time.time()}
        )

    def quality(self) -> dict[str, Any]:
        return {
            "model": "logistic_regression",
            "model_version": f"v{self.model.version}.{self.model.learned}",
            "learned": self.model.learned,
            "pending": len(self.pending),
            "expired": self.expired,
            "expiry_s": self.settings.bid_expiry_s,
            "model_scores": self.scores.report(),
            "baseline": "profile's smoothed historical win rate",
            "baseline_scores": self.baseline_scores.report(),
            "top_weights": self.model.top_weights(15),
            "health": self.health.summary(),
            "event_time": self.clock,
            "updated_at": time.time(),
        }


def register(ctx) -> None:  # noqa: ANN001 - streams.app.WorkerContext (import cycle)
    service = BidService(ctx.settings)
    bids_topic = BIDS.full_name(ctx.settings)
    store = SnapshotStore(Path(ctx.settings.snapshot_dir) / ctx.settings.consumer_group, keep=ctx.settings.snapshot_keep)

    async def before() -> None:
        if service.owned is None:
            return
        if not service.restored:
            found = await asyncio.to_thread(store.latest, MODEL, topic=bids_topic, partitions=service.owned)
            if found is not None:
                service.restore(*found, bids_topic)
            service.restored = True
        if service.stale:
            service.keep_partitions(service.owned)
            service.stale = False

    def nothing(effects: Effects, event: Any, keys: Keys) -> None:
        """Every effect of a bid event depends on the model: it is all in ``learn``."""

    async def emit() -> None:
        if service.outbox:
            outbox, service.outbox = service.outbox, []
            await ctx.send_all(outbox)

    ctx.consume(BIDS, nothing, name="score_and_learn_bids", finish=service.finish, before=before,
                lock=service.lock, learn=service.learn, gate=service.gate, emit=emit)

    @ctx.app.timer(interval=SNAPSHOT_EVERY_S)
    async def publish_bid_model() -> None:
        # Weights are published at most once a second, not per batch: they are the largest
        # thing the bids agent writes, and draft scoring does not need them fresher.
        async with service.lock:
            doc = service.snapshot_weights()
        if doc is not None:
            await with_redis_retry("bid model", lambda: ctx.redis.hset(ctx.keys.bid_models, service.member, doc))

    async def save_snapshot() -> None:
        async with service.lock:
            if not service.restored or not service.learned_since_snapshot:
                return
            meta, body = service.snapshot(bids_topic)
        await write(store, meta, body)

    if ctx.settings.snapshot_interval_s > 0:
        @ctx.app.timer(interval=ctx.settings.snapshot_interval_s)
        async def snapshot_bid_model() -> None:
            await save_snapshot()

    @ctx.app.on_before_shutdown.connect
    async def snapshot_bids_on_shutdown(app: Any, **kwargs: Any) -> None:
        await save_snapshot()

    @ctx.app.on_partitions_assigned.connect
    async def take_partitions(app: Any, assigned: set, **kwargs: Any) -> None:
        service.owned = {tp.partition for tp in assigned if tp.topic == bids_topic}
        service.stale = True
