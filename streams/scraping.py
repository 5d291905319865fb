"""Self-healing scrapers: per-domain strategy selection, switch events and scrape anomalies.

Attempts arrive on ``scrape-attempts`` keyed by domain, so each domain has one owner
worker, which keeps the domain's :class:`~online_models.strategy.DomainSelector`. Per
batch the owner learns every fresh attempt (and operators' pins, which travel on the same
topic), emits a ``strategy_switch`` for every change of choice and an ``alert`` when no
strategy works, and writes the domain's read model (``strategy:{domain}``), its analytics
summary, its source reliability and the selector's whole state, all in the batch's
atomic write. The emitted events are acked by Kafka before that write (see
``streams/pipeline.py``): a crash in between redelivers the batch, which the selector,
restored from the stored state, decides again identically, so a switch may repeat with
the same ``decision_id`` but is never lost, and never repeats in a storm.

Anomalies. The runs of a domain (``items_found`` of successful attempts) are watched by
the owner. The shape of scraped items is watched per source (an item's ``domain``, else
its ``source``) by every worker, from the catalogue stream all workers follow anyway; only
the owner of the source's domain partition emits the ``rescrape_request`` and ``alert``,
and it records the index of the last alarm it emitted, so a restart that re-reads the
catalogue does not repeat old alarms.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import orjson

from online_models.scrape_shape import ShapeMonitor, Shift, SourceShapeMonitor
from online_models.strategy import (
    Alarm,
    Decision,
    DomainSelector,
    SelectorConfig,
    event_slug,
)
from schemas.envelope import partition_of
from schemas.events import (
    AlertEvent,
    EventDecodeError,
    RescrapeRequestEvent,
    StrategySwitchEvent,
    encode_event,
    validate_event,
)
from schemas.keys import Keys
from schemas.settings import Settings
from schemas.topics import (
    ALERTS,
    RESCRAPE_REQUESTS,
    SCRAPE_ATTEMPTS,
    STRATEGY_SWITCHES,
    TopicSpec,
)
from streams.pipeline import Effects, with_redis_retry

log = logging.getLogger(__name__)

CATALOGUE_POLL_S = 0.5

#: Features whose shift one way is a recovery, not an anomaly: fewer missing fields, fewer
#: unusual tags, more items per run. A recovery is recorded and announced (info), but asks
#: for no rescrape. Shifts of the other features are anomalies either way.
GOOD_DIRECTION = {
    "missing_title": -1, "missing_url": -1, "missing_deadline": -1, "new_tag_share": -1, "items_found": +1,
}


def is_recovery(shift: Shift) -> bool:
    direction = GOOD_DIRECTION.get(shift.feature, 0)
    return direction != 0 and (shift.after - shift.before) * direction > 0
DAY_S = 86400.0
ANOMALIES_KEPT = 20


def selector_config(settings: Settings, domain: str) -> SelectorConfig:
    """The selector rules of one domain, from the settings (0 switches a rule off)."""
    return SelectorConfig(
        window=settings.scrape_window,
        min_attempts=settings.scrape_min_attempts,
        rate_threshold=settings.scrape_rate_threshold or None,
        consecutive_failures=settings.scrape_consecutive_failures or None,
        error_burst=settings.scrape_error_burst or None,
        error_burst_window=settings.scrape_error_burst_window,
        reevaluate_every=settings.scrape_reevaluate_every or None,
        confidence=settings.scrape_switch_confidence,
        min_gain=settings.scrape_min_gain,
        recovery_successes=settings.scrape_recovery_successes,
        discount=settings.scrape_discount,
        explore_rate=settings.scrape_explore_rate,
        automation=settings.scrape_automation and domain not in settings.scrape_automation_off_domains,
    )


class ScrapingService:
    """One worker's selectors, anomaly monitors and the events they produce."""

    def __init__(self, settings: Settings, keys: Keys) -> None:
        self.settings = settings
        self.keys = keys
        self.selectors: dict[str, DomainSelector] = {}
        self.known: set[str] = set(settings.scrape_strategies)
        self.runs: dict[str, ShapeMonitor] = {}  # domain -> items found per successful run
        self.shapes: dict[str, SourceShapeMonitor] = {}  # source -> shape of its items
        self.anomalies: dict[str, list[dict[str, Any]]] = {}  # source -> recent anomalies
        self.emitted_index: dict[str, int] = {}  # source -> index of the last item alarm emitted
        self.alarmed: set[str] = set()  # sources whose item alarms await their reliability write
        self.outbox: list[tuple[TopicSpec, bytes | None, bytes]] = []
        self.touched: set[str] = set()
        self.owned: set[int] = set()  # partitions of scrape-attempts this worker owns
        self.stale = True  # reload selector states before the next batch
        self.catalogue_id = "0-0"
        self.lock = asyncio.Lock()

    # --- state ----------------------------------------------------------------------------

    def selector(self, domain: str) -> DomainSelector:
        sel = self.selectors.get(domain)
        if sel is None:
            sel = self.selectors[domain] = DomainSelector(domain, selector_config(self.settings, domain), self.known)
        return sel

    async def load(self, redis: Any) -> None:
        """Take every domain's selector from Redis: after an assignment another worker may
        have moved a domain on; the stored state is the one its last batch wrote."""
        raw = await redis.hgetall(self.keys.strategy_state)
        loaded = {}
        for domain_b, state_b in raw.items():
            domain = domain_b.decode()
            loaded[domain] = DomainSelector.from_state(orjson.loads(state_b), selector_config(self.settings, domain))
        self.selectors = loaded
        for sel in loaded.values():
            self.known.update(sel.arms)
        sources = await redis.hgetall(self.keys.sources)
        for source_b, doc_b in sources.items():
            doc = orjson.loads(doc_b)
            self.emitted_index[source_b.decode()] = doc.get("anomaly_index", 0)
        self.stale = False

    def owns(self, domain: str) -> bool:
        return partition_of(domain.encode(), range(self.settings.partitions)) in self.owned

    # --- the batch path -------------------------------------------------------------------

    def effect(self, effects: Effects, event: Any, keys: Keys) -> None:
        """Learn one attempt or pin; queue the events it leads to."""
        sel = self.selector(event.domain)
        self.touched.add(event.domain)
        if event.type == "strategy_pin":
            if event.strategy is None:
                sel.unpin()
                return
            decision = sel.pin(event.strategy, event.ts, by=event.by or "operator")
            if decision is not None:
                self._queue_decision(decision)
            return
        if event.strategy not in self.known:
            self.known.add(event.strategy)
            for other in self.selectors.values():
                other.add_strategies([event.strategy])
        outcomes = sel.observe(
            event.strategy, event.success, event.ts,
            latency_ms=event.latency_ms, error_type=event.error_type, items_found=event.items_found,
        )
        for out in outcomes:
            if isinstance(out, Decision):
                self._queue_decision(out)
            elif isinstance(out, Alarm):
                self._queue_alarm(out, sel.attempts)
        if self.settings.scrape_drift_detection and event.success and event.items_found is not None:
            monitor = self.runs.setdefault(event.domain, ShapeMonitor())
            for shift in monitor.learn_one({"items_found": float(event.items_found)}):
                self._queue_anomaly(event.domain, shift, event.ts, what="runs")

    def finish(self, effects: Effects, fresh: Sequence[Any], keys: Keys) -> None:
        """After a batch: each touched domain's read model, summary, reliability and state."""
        for domain in self.touched:
            sel = self.selectors[domain]
            stats = sel.stats()
            effects.set(keys.strategy(domain), orjson.dumps(sel.view(stats)))
            effects.hset(keys.strategy_state, domain, orjson.dumps(sel.to_state()))
            effects.hset(keys.scraping, domain, orjson.dumps(self.summary(sel, stats)))
            effects.hset(keys.sources, domain, orjson.dumps(self.reliability(domain)))
        self.touched.clear()

    async def emit(self, send_all: Any) -> None:
        if self.outbox:
            outbox, self.outbox = self.outbox, []
            await send_all(outbox)

    def _queue(self, spec: TopicSpec, key: str, event: Any) -> None:
        self.outbox.append((spec, key.encode(), encode_event(event)))

    def _queue_decision(self, d: Decision) -> None:
        log.info("strategy switch on %s: %s -> %s (%s)", d.domain, d.from_strategy, d.to_strategy, d.reason)
        self._queue(STRATEGY_SWITCHES, d.domain, StrategySwitchEvent(
            type="strategy_switch", event_id=d.decision_id, ts=d.ts, domain=d.domain,
            from_strategy=d.from_strategy, to_strategy=d.to_strategy, reason=d.reason,
            params=d.params | {"trigger": d.trigger}, decision_id=d.decision_id,
        ))

    def _queue_alarm(self, a: Alarm, attempt: int) -> None:
        log.warning("alert on %s: %s", a.domain, a.detail)
        self._queue(ALERTS, a.domain, AlertEvent(
            type="alert", event_id=f"{event_slug(a.domain)}:{a.kind}:{attempt}", ts=a.ts,
            kind=a.kind, subject=a.domain, detail=a.detail, severity=a.severity,
        ))

    def _record(self, source: str, shift: Shift, ts: float, what: str) -> None:
        if is_recovery(shift):
            return
        history = self.anomalies.setdefault(source, [])
        history.append({"ts": ts, "what": what, "feature": shift.feature, "before": shift.before,
                        "after": shift.after, "index": shift.index, "detail": shift.detail})
        del history[:-ANOMALIES_KEPT]

    def _queue_anomaly(self, source: str, shift: Shift, ts: float, *, what: str) -> None:
        self._record(source, shift, ts, what)
        base = f"{event_slug(source)}:{what}:{int(ts)}:{shift.index}"
        reason = f"{what} of {source} shifted: {shift.detail}"
        if is_recovery(shift):
            log.info("scrape recovery: %s", reason)
            self._queue(ALERTS, source, AlertEvent(
                type="alert", event_id=f"{base}:alert", ts=ts, kind="scrape_recovered", subject=source,
                detail=reason, severity="info",
            ))
            return
        log.warning("scrape anomaly: %s", reason)
        self._queue(RESCRAPE_REQUESTS, source, RescrapeRequestEvent(
            type="rescrape_request", event_id=f"{base}:rescrape", ts=ts, source=source, domain=source,
            reason=reason,
        ))
        self._queue(ALERTS, source, AlertEvent(
            type="alert", event_id=f"{base}:alert", ts=ts, kind="scrape_anomaly", subject=source,
            detail=reason, severity="warning",
        ))

    # --- read models ----------------------------------------------------------------------

    @staticmethod
    def summary(sel: DomainSelector, stats: dict[str, Any] | None = None) -> dict[str, Any]:
        """What the analytics page needs of a domain: per strategy totals and errors, switches."""
        stats = sel.stats() if stats is None else stats
        return {
            "current": sel.current,
            "pinned": sel.pinned,
            "no_working_strategy": sel.no_working,
            "updated_at": sel.last_ts,
            "strategies": {
                name: {
                    "attempts": s["attempts"], "successes": s["successes"],
                    "recent_success_rate": s["recent_success_rate"], "last_day": s["last_day"],
                    "errors": s["errors"], "trend": s["trend"], "tripped": s["tripped"] is not None,
                }
                for name, s in stats.items()
            },
            "switches": sel.switches[-20:],
        }

    def reliability(self, source: str) -> dict[str, Any]:
        """How far a source's items can be trusted: the success rate of the strategy in use,
        and halved for a day after an anomaly in what it returned."""
        sel = self.selectors.get(source)
        rate = None
        if sel is not None and sel.current is not None:
            rate = sel.arms[sel.current].rate()
        history = self.anomalies.get(source, [])
        now = max([sel.last_ts if sel else 0.0] + [a["ts"] for a in history])
        recent = [a for a in history if a["ts"] >= now - DAY_S]
        score = (0.5 + 0.5 * (1.0 if rate is None else rate)) * (0.5 if recent else 1.0)
        return {
            "source": source,
            "success_rate": rate,
            "anomalies": len(history),
            "anomalies_last_day": len(recent),
            "last_anomaly": history[-1] if history else None,
            "anomaly_index": self.emitted_index.get(source, 0),
            "reliability": round(score, 4),
            "updated_at": now or None,
        }

    # --- the catalogue follower -----------------------------------------------------------

    def learn_catalogue_entry(self, raw: bytes) -> list[tuple[str, Shift, float]]:
        """Watch one catalogue item; returns the shifts it revealed (source, shift, ts)."""
        try:
            event = validate_event(orjson.loads(raw))
        except (orjson.JSONDecodeError, EventDecodeError) as exc:  # written by Eddy: should not happen
            log.error("unreadable catalogue entry skipped: %s", exc)
            return []
        source = event.domain or event.source
        if event.retracted or not source:
            return []
        monitor = self.shapes.setdefault(source, SourceShapeMonitor())
        return [(source, shift, event.ts or 0.0) for shift in monitor.learn_item(event.model_dump())]

    async def follow_catalogue(self, redis: Any, send_all: Any) -> int:
        """Feed new catalogue entries to the shape monitors; the owner emits their alarms."""
        total = 0
        while True:
            reply = await redis.xread({self.keys.catalogue: self.catalogue_id}, count=2000)
            n = 0
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    for source, shift, ts in self.learn_catalogue_entry(fields[b"item"]):
                        self._item_shift(source, shift, ts)
                    self.catalogue_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    n += 1
            total += n
            if self.outbox:
                await self.emit(send_all)
                # Only the sources that just alarmed: their anomaly and index changed.
                for source in self.alarmed:
                    await redis.hset(self.keys.sources, source, orjson.dumps(self.reliability(source)))
                self.alarmed.clear()
            if n < 2000:
                return total

    def _item_shift(self, source: str, shift: Shift, ts: float) -> None:
        if not self.owns(source) or shift.index <= self.emitted_index.get(source, 0):
            # Another worker emits it, or it was emitted before a restart: learn, don't repeat.
            self._record(source, shift, ts, "items")
            return
        self.emitted_index[source] = shift.index
        self.alarmed.add(source)
        self._queue_anomaly(source, shift, ts, what="items")


def register(ctx) -> None:  # noqa: ANN001 - streams.app.WorkerContext (import cycle)
    service = ScrapingService(ctx.settings, ctx.keys)
    attempts_topic = SCRAPE_ATTEMPTS.full_name(ctx.settings)

    async def before() -> None:
        if service.stale:
            await with_redis_retry("load selectors", lambda: service.load(ctx.redis))

    async def emit() -> None:
        await service.emit(ctx.send_all)

    ctx.consume(
        SCRAPE_ATTEMPTS, service.effect, name="select_scraping_strategies", finish=service.finish,
        before=before, emit=emit, lock=service.lock,
        whole_batches=True,  # finish saves the selectors the batch's effects moved
    )

    @ctx.app.on_partitions_assigned.connect
    async def track_domains(app: Any, assigned: set, **kwargs: Any) -> None:
        service.owned = {tp.partition for tp in assigned if tp.topic == attempts_topic}
        service.stale = True

    if ctx.settings.scrape_drift_detection:

        @ctx.app.task
        async def watch_scraped_items() -> None:
            while True:
                async with service.lock:
                    if service.stale:
                        await with_redis_retry("load selectors", lambda: service.load(ctx.redis))
                    await with_redis_retry(
                        "catalogue shapes", lambda: service.follow_catalogue(ctx.redis, ctx.send_all)
                    )
                await asyncio.sleep(CATALOGUE_POLL_S)

