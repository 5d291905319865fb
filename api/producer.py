"""The API's Kafka producer: sends validated events to their topics and waits for the acks.

It starts in the background, so the API answers (503 on produce, 503 on /readyz) while the
broker is away and recovers by itself when it comes back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.envelope import pack
from schemas.events import encode_event
from schemas.settings import Settings
from schemas.topics import key_of, route

log = logging.getLogger(__name__)


class ProducerUnavailable(RuntimeError):
    """Kafka did not take the events; nothing reported as accepted was lost."""


class EventProducer:
    """Wraps one AIOKafkaProducer (acks=all) for the lifetime of the API process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._starter: asyncio.Task | None = None

    async def start(self) -> None:
        self._starter = asyncio.create_task(self._start_until_up(), name="kafka-producer-start")

    async def _start_until_up(self) -> None:
        delay = 0.2
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.bootstrap_servers,
                acks="all",
                linger_ms=2,
                max_batch_size=1_048_576,
                max_request_size=max(1_048_576, self.settings.max_event_bytes * 2),
                request_timeout_ms=int(self.settings.produce_timeout_s * 1000),
                client_id="eddy-api",
            )
            try:
                await producer.start()
            except (KafkaError, OSError) as exc:
                log.warning("Kafka not reachable yet (%s); retrying in %.1fs", exc, delay)
                await producer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._producer = producer
            log.info("Kafka producer connected to %s", self.settings.kafka_bootstrap)
            return

    async def stop(self) -> None:
        if self._starter is not None and not self._starter.done():
            self._starter.cancel()
        if self._producer is not None:
            await self._producer.stop()

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def ping(self, timeout_s: float = 2.0) -> None:
        """Raise unless the broker answers a metadata request within ``timeout_s``."""
        if self._producer is None:
            raise ProducerUnavailable("producer not connected yet")
        try:
            ok = await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout_s)
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            raise ProducerUnavailable(f"metadata request failed: {exc!r}") from exc
        if ok is None:
            raise ProducerUnavailable("no broker answered the metadata request")

    async def send_events(self, events: Sequence[object]) -> None:
        """Send every event to its topic with its key; return once all are acked."""
        if self._producer is None:
            raise ProducerUnavailable("Kafka producer not connected")
        prefix = self.settings.topic_prefix
        try:
            if self.settings.produce_envelopes:
                futures = await self._send_envelopes(events, prefix)
            else:
                futures = [
                    await self._producer.send(
                        prefix + route(event.type).name, value=encode_event(event), key=key_of(event)
                    )
                    for event in events
                ]
            await asyncio.wait_for(asyncio.gather(*futures), self.settings.produce_timeout_s)
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            raise ProducerUnavailable(f"Kafka did not acknowledge the events: {exc!r}") from exc

    async def _send_envelopes(self, events: Sequence[object], prefix: str) -> list[asyncio.Future]:
        by_topic: dict[str, list[tuple[bytes | None, bytes]]] = {}
        for event in events:
            by_topic.setdefault(prefix + route(event.type).name, []).append((key_of(event), encode_event(event)))
        futures = []
        for topic, encoded in by_topic.items():
            partitions = await self._partitions(topic)
            for partition, record in pack(encoded, partitions):
                futures.append(await self._producer.send(topic, value=record, partition=partition))
        return futures

    async def _partitions(self, topic: str) -> list[int]:
        partitions = await self._producer.partitions_for(topic)
        if not partitions:
            raise ProducerUnavailable(f"topic {topic!r} does not exist; run `eddy topics`")
        return sorted(partitions)
