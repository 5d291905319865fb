"""Builds the Faust app: the consumer group, its topics and one agent per inbound topic.

Everything is built inside :func:`create_app` from a :class:`Settings`, so tests and the
embedded stack can run several isolated workers without touching module state. The
worker entry point is ``eddy worker`` (see ``deploy/cli.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import faust
import mode
import orjson
import redis.asyncio as aioredis
from prometheus_client import start_http_server

from schemas.events import AlertEvent, encode_event
from schemas.keys import Keys
from schemas.settings import Settings
from schemas.topics import ALERTS, DEAD_LETTERS, TopicSpec
from streams import metrics
from streams.pipeline import (
    DeadLetter,
    EffectFn,
    FinishFn,
    LearnFn,
    Learning,
    apply_batch,
    decode_batch,
    learn_batch,
    with_redis_retry,
)
from streams.replay import read_ranges
from streams.transport import App

log = logging.getLogger(__name__)


class OffsetGate:
    """partition -> the first offset a model has not learned yet (what its snapshot saves)."""

    def __init__(self, offsets: dict[int, int] | None = None) -> None:
        self.next: dict[int, int] = dict(offsets or {})

    def gate(self, partition: int) -> int:
        return self.next.get(partition, 0)

    def advance(self, records: list[Any]) -> None:
        for rec in records:
            if rec.offset >= self.next.get(rec.partition, 0):
                self.next[rec.partition] = rec.offset + 1

    def keep(self, partitions: set[int]) -> None:
        """Forget partitions another worker now owns: their state is rebuilt if they return."""
        self.next = {p: o for p, o in self.next.items() if p in partitions}


def wheres_of(events: list[tuple[Any, Any]]) -> list[str]:
    """``partition:offset:index`` of each decoded event, the index counting events of one
    record (the same on every delivery of it)."""
    out = []
    last, index = None, 0
    for _, rec in events:
        index = index + 1 if rec is last else 0
        last = rec
        out.append(f"{rec.partition}:{rec.offset}:{index}")
    return out


@dataclass
class WorkerContext:
    """What every agent shares: settings, key layout, the Redis client, the dead-letter topic."""

    app: faust.App
    settings: Settings
    keys: Keys
    redis: Any
    dead_letters_topic: faust.TopicT
    topics: dict[str, faust.TopicT] = field(default_factory=dict)
    notifier: Any = None  # streams.alerting.WebhookNotifier, when a webhook is configured

    def topic(self, spec: TopicSpec) -> faust.TopicT:
        name = spec.full_name(self.settings)
        if name not in self.topics:
            self.topics[name] = self._new_topic(name)
        return self.topics[name]

    def _new_topic(self, name: str) -> faust.TopicT:
        return self.app.topic(
            name,
            partitions=self.settings.partitions,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    async def send_all(self, outbox: list[tuple[TopicSpec, bytes | None, bytes]]) -> None:
        """Send events Eddy produced and wait for every ack (so none is lost before the
        batch that produced it is committed)."""
        futures = [await self.topic(spec).send(key=key, value=value) for spec, key, value in outbox]
        for fut in futures:
            await fut
        if self.notifier is not None:
            # After Kafka's ack: the webhook repeats what the alerts topic holds.
            for spec, _, value in outbox:
                if spec.name == ALERTS.name:
                    self.notifier.notify(AlertEvent.model_validate_json(value))

    async def dead_letter(self, letters: list[DeadLetter]) -> None:
        """Send dead letters and wait for the broker's ack before the batch is acked."""
        futures = []
        for letter in letters:
            log.warning(
                "dead letter from %s[%d]@%d: %s", letter.topic, letter.partition, letter.offset,
                letter.reason,
            )
            futures.append(await self.dead_letters_topic.send(key=letter.key, value=letter.encode()))
        for fut in futures:
            await fut

    def consume(
        self,
        spec: TopicSpec,
        effect: EffectFn,
        *,
        name: str,
        finish: FinishFn | None = None,
        before: Callable[[], Awaitable[None]] | None = None,
        lock: asyncio.Lock | None = None,
        emit: Callable[[], Awaitable[None]] | None = None,
        learn: LearnFn | None = None,
        gate: OffsetGate | None = None,
        whole_batches: bool = False,
    ) -> None:
        """Declare an agent that applies ``effect`` to every valid event of ``spec``'s topic.

        ``finish`` runs after each batch's events (in its last atomic write); ``before``
        is awaited ahead of each batch; ``emit`` after its effects are known and before
        they are written (see :func:`streams.pipeline.apply_batch`); ``lock`` is held while
        a batch is handled. ``learn`` is the model's side of an event, gated by the offsets
        in ``gate`` (see :class:`streams.pipeline.Learning`).

        A batch is written in atomic calls of at most ``Settings.apply_max_events`` events,
        unless ``whole_batches``: then in one. An agent needs that when ``finish`` saves
        state its effects built in memory (the strategy selectors): a crash between two
        calls would leave the first slice's events marked applied but missing from that
        state, and the redelivered batch would skip them.
        """
        lock = lock or asyncio.Lock()
        allowed = frozenset(spec.types)
        settings = self.settings
        topic_name = spec.full_name(settings)
        max_events = None if whole_batches else settings.apply_max_events

        async def agent(stream: faust.StreamT) -> None:
            # Manual acks: a record is acked only after its batch is written. The batch is
            # flushed when full or when no record is waiting, so batches grow under load
            # and a lone event is written at once.
            manual = stream.noack()
            batch: list[faust.EventT] = []
            size = 0
            async for _ in manual:
                event = manual.current_event
                batch.append(event)
                size += len(event.message.value or b"")
                full = len(batch) >= settings.batch_max or size >= settings.batch_max_bytes
                if not full and manual.channel.empty() and settings.batch_linger_s > 0:
                    # The fetcher hands records over a few at a time; a short pause lets
                    # the next ones arrive, so the two Redis round trips of a batch are
                    # shared by hundreds of records instead of a handful.
                    await asyncio.sleep(settings.batch_linger_s)
                if full or manual.channel.empty():
                    with metrics.BATCH_SECONDS.labels(topic_name).time():
                        async with lock:
                            if before is not None:
                                await before()
                            await self.handle(batch, allowed, effect, topic_name, finish, emit, learn, gate, max_events)
                    for done in batch:
                        await manual.ack(done)
                    batch, size = [], 0

        agent.__name__ = agent.__qualname__ = name
        self.app.agent(
            self.topic(spec),
            name=name,
            concurrency=1,  # faust-streaming #606: >1 loses messages past offset gaps
            supervisor_strategy=mode.CrashingSupervisor,
        )(agent)

    async def handle(
        self,
        batch: list[faust.EventT],
        allowed: frozenset[str],
        effect: EffectFn,
        topic_name: str,
        finish: FinishFn | None = None,
        emit: Callable[[], Awaitable[None]] | None = None,
        learn: LearnFn | None = None,
        gate: OffsetGate | None = None,
        max_events: int | None = None,
    ) -> None:
        records = [ev.message for ev in batch]
        learning = None
        if learn is not None and gate is not None:
            learning = Learning(learn, gate.gate)
            await self.catch_up(records, allowed, topic_name, learning, gate)
        decoded = decode_batch(records, allowed_types=allowed, max_bytes=self.settings.max_event_bytes,
                               max_skew_s=self.settings.max_clock_skew_s)
        if decoded.dead:
            await self.dead_letter(decoded.dead)

        async def reject(rejected: list) -> None:
            # Only when an effect refused events: the common batch pays nothing for it.
            record_of = {id(event): rec for event, rec in decoded.events}
            letters = []
            for event, reason in rejected:
                rec = record_of[id(event)]
                letters.append(DeadLetter(reason, rec.topic, rec.partition, rec.offset, rec.key,
                                          encode_event(event), [{"field": "", "reason": reason}]))
            await self.dead_letter(letters)
        result = await apply_batch(
            self.redis,
            self.keys,
            [event for event, _ in decoded.events],
            effect,
            topic=topic_name,
            dedupe_ttl_s=self.settings.dedupe_ttl_s,
            finish=finish,
            emit=emit,
            reject=reject,
            wheres=wheres_of(decoded.events),
            learning=learning,
            max_events=max_events,
        )
        if gate is not None:
            gate.advance(records)
        metrics.RECORDS.labels(topic_name).inc(len(records))
        metrics.APPLIED.labels(topic_name).inc(result.applied)
        metrics.DUPLICATES.labels(topic_name).inc(result.duplicates)
        metrics.DEAD_LETTERS.labels(topic_name).inc(len(decoded.dead) + result.rejected)


    async def catch_up(
        self, records: list[Any], allowed: frozenset[str], topic_name: str, learning: Learning, gate: OffsetGate
    ) -> None:
        """Learn what the model missed before the batch's first record of each partition:
        records a restored snapshot predates, or a whole partition new to this worker."""
        firsts: dict[int, int] = {}
        for rec in records:
            firsts[rec.partition] = min(rec.offset, firsts.get(rec.partition, rec.offset))
        ranges = {p: (gate.gate(p), first) for p, first in firsts.items() if gate.gate(p) < first}
        if not ranges:
            return
        started = time.perf_counter()
        read, learned = await self.relearn(topic_name, allowed, ranges, learning, gate)
        for p, first in firsts.items():
            gate.next[p] = max(gate.gate(p), first)
        metrics.CATCH_UP_RECORDS.labels(topic_name).inc(read)
        log.info("caught up %s %s: %d records, %d events learned in %.1fs", topic_name,
                 {p: list(r) for p, r in ranges.items()}, read, learned, time.perf_counter() - started)


    async def relearn(
        self, topic_name: str, allowed: frozenset[str], ranges: dict[int, tuple[int, int | None]],
        learning: Learning, gate: OffsetGate | None = None,
    ) -> tuple[int, int]:
        """Teach ``learning`` the records of ``ranges`` again, from the log: Redis applied
        them already, so nothing is written. Returns (records read, events learned)."""
        read = learned = 0
        async for chunk in read_ranges(self.settings, topic_name, ranges):
            decoded = decode_batch(chunk, allowed_types=allowed, max_bytes=self.settings.max_event_bytes,
                                   max_skew_s=self.settings.max_clock_skew_s)
            learned += await learn_batch(
                self.redis, self.keys, [event for event, _ in decoded.events], wheres_of(decoded.events), learning,
                dedupe_ttl_s=self.settings.dedupe_ttl_s,
            )
            if gate is not None:
                gate.advance(chunk)
            read += len(chunk)
        return read, learned


def create_app(settings: Settings) -> faust.App:
    """The worker's Faust app with every agent registered."""
    from streams import bids, items, recommend, scraping

    app = App(
        settings.consumer_group,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        broker=settings.faust_broker,
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        web_enabled=settings.worker_web_port > 0,
        web_port=settings.worker_web_port or 6066,
        web_bind="127.0.0.1",
        broker_session_timeout=settings.session_timeout_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )
    ctx = WorkerContext(
        app=app,
        settings=settings,
        keys=Keys(settings.redis_prefix),
        redis=aioredis.from_url(settings.redis_url, socket_timeout=10, health_check_interval=30),
        dead_letters_topic=None,  # type: ignore[arg-type]
    )
    ctx.dead_letters_topic = ctx.topic(DEAD_LETTERS)
    from streams.alerting import notifier_from

    ctx.notifier = notifier_from(settings)
    if ctx.notifier is not None:
        notifier = ctx.notifier

        @app.task
        async def deliver_alerts() -> None:
            await notifier.start()

        @app.on_before_shutdown.connect
        async def drain_alerts(app: faust.App, **kwargs: Any) -> None:
            await notifier.stop()
    for module in (items, recommend, scraping, bids):
        module.register(ctx)

    @app.on_partitions_assigned.connect
    async def announce_assignment(app: faust.App, assigned: set, **kwargs: Any) -> None:
        # Lets operators and tests see which worker owns how many partitions, and since when.
        member = f"{socket.gethostname()}:{os.getpid()}"
        doc = orjson.dumps({"partitions": len(assigned), "assigned_at": time.time()})
        await with_redis_retry("announce", lambda: ctx.redis.hset(ctx.keys.workers, member, doc))

    if settings.worker_metrics_port:

        @app.task
        async def serve_metrics() -> None:
            start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)

    return app
