"""Kafka-side figures for the dashboard: the workers' consumer lag and the latest alerts.

The worker writes its counts to Redis but not how far behind it is nor the alerts it sent
(those only go to the ``alerts`` topic), so the API asks the broker. Each answer is cached
for a moment: every open dashboard polls once a second, and the broker should see one
query a second however many tabs are open. A broker that does not answer in time gives a
reported error, never a failed page.

Tansu answers ListOffsets with one past the first offset of the topic's last record batch,
short of the real end (see ``deploy/export.py``), so on Tansu the lag shown is a lower
bound; on Apache Kafka it is exact.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from schemas.settings import Settings
from schemas.topics import ALERTS, CATALOGUE

log = logging.getLogger(__name__)

INBOUND = tuple(spec for spec in CATALOGUE if spec.inbound)
LAG_TTL_S = 1.0
ALERTS_TTL_S = 2.0
TIMEOUT_MS = 2000


class KafkaMonitor:
    """One metadata consumer and one admin client, opened on first use, for the API's life.

    They are kafka-python clients run in a thread: aiokafka's admin client cannot decode
    Tansu's OffsetFetch answer, kafka-python's can (the test fixtures use it the same way).
    """

    def __init__(self, settings: Settings, *, alerts_kept: int = 20) -> None:
        self.settings = settings
        self.alerts_kept = alerts_kept
        self._consumer: KafkaConsumer | None = None
        self._admin: KafkaAdminClient | None = None
        self._lock = asyncio.Lock()
        self._thread_lock = threading.Lock()  # kafka-python clients are not thread-safe
        self._cache: dict[str, tuple[float, Any]] = {}

    def _clients(self) -> tuple[KafkaConsumer, KafkaAdminClient]:
        if self._consumer is None or self._admin is None:
            servers = self.settings.bootstrap_servers
            # group_id=None: this consumer only looks at offsets and reads by assignment,
            # it never joins (and so never disturbs) the workers' group.
            self._consumer = KafkaConsumer(
                bootstrap_servers=servers, group_id=None, enable_auto_commit=False, client_id="eddy-api-monitor",
                fetch_max_wait_ms=50, request_timeout_ms=TIMEOUT_MS + 1000,
            )
            self._admin = KafkaAdminClient(bootstrap_servers=servers, client_id="eddy-api-monitor",
                                           request_timeout_ms=TIMEOUT_MS)
        return self._consumer, self._admin

    def _close(self) -> None:
        for client in (self._consumer, self._admin):
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing a broken client: nothing more to do
                    log.debug("closing a monitor client failed", exc_info=True)
        self._consumer = self._admin = None

    async def close(self) -> None:
        await asyncio.to_thread(self._locked, self._close)

    def _locked(self, fn: Any) -> Any:
        with self._thread_lock:
            return fn()

    async def _cached(self, name: str, ttl_s: float, compute: Any) -> Any:
        async with self._lock:  # one broker query at a time; the others get its answer
            hit = self._cache.get(name)
            if hit is not None and time.monotonic() - hit[0] < ttl_s:
                return hit[1]
            try:
                value = await asyncio.to_thread(self._locked, compute)
            except Exception as exc:  # noqa: BLE001 - any broker trouble: report it, reconnect next time
                log.warning("dashboard could not read %s from Kafka: %r", name, exc)
                await asyncio.to_thread(self._locked, self._close)
                value = {"error": f"Kafka did not answer: {type(exc).__name__}"}
            self._cache[name] = (time.monotonic(), value)
            return value

    def _partitions(self, consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]

    async def lag(self) -> dict[str, Any]:
        """Records on the inbound topics the workers' group has not committed yet."""
        return await self._cached("lag", LAG_TTL_S, self._lag)

    def _lag(self) -> dict[str, Any]:
        consumer, admin = self._clients()
        group = self.settings.consumer_group
        tps = [tp for spec in INBOUND for tp in self._partitions(consumer, spec.full_name(self.settings))]
        ends = consumer.end_offsets(tps, timeout_ms=TIMEOUT_MS) if tps else {}
        committed = admin.list_group_offsets(group).get(group, {})
        by_topic: dict[str, int] = {}
        for tp in tps:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            name = tp.topic.removeprefix(self.settings.topic_prefix)
            by_topic[name] = by_topic.get(name, 0) + max(0, ends[tp] - done)
        return {"total": sum(by_topic.values()), "by_topic": by_topic, "group": group}

    async def alerts(self) -> list[dict[str, Any]] | dict[str, str]:
        """The latest alerts the workers sent, newest first."""
        return await self._cached("alerts", ALERTS_TTL_S, self._alerts)

    def _alerts(self) -> list[dict[str, Any]]:
        consumer, _ = self._clients()
        tps = self._partitions(consumer, ALERTS.full_name(self.settings))
        if not tps:
            return []
        consumer.assign(tps)
        starts = consumer.beginning_offsets(tps, timeout_ms=TIMEOUT_MS)
        listed = consumer.end_offsets(tps, timeout_ms=TIMEOUT_MS)
        # The last few of each partition hold the newest overall (alerts carry their time).
        for tp in tps:
            consumer.seek(tp, max(starts[tp], listed[tp] - self.alerts_kept))
        records = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=100).values():
                records.extend(batch)
            # Past Tansu's short ListOffsets answer, a fetch's high watermark is the real end.
            if all(consumer.position(tp) >= max(listed[tp], consumer.highwater(tp) or 0) for tp in tps):
                break
        alerts: dict[str, dict[str, Any]] = {}
        for rec in records:
            try:
                doc = orjson.loads(rec.value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict) and doc.get("type") == "alert":
                # Keyed by event_id: a worker that crashed after sending re-sends the same alert.
                alerts[str(doc.get("event_id"))] = {
                    f: doc.get(f) for f in ("ts", "kind", "subject", "detail", "severity", "event_id")}
        newest = sorted(alerts.values(), key=lambda a: a["ts"] or 0.0, reverse=True)
        return newest[: self.alerts_kept]
