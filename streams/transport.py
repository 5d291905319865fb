"""Faust's aiokafka transport with the fetch wait Eddy needs for fresh answers.

Faust builds its worker consumer with ``fetch_max_wait_ms=1500`` hard-coded. A broker
that does not answer a pending fetch as soon as data arrives (Tansu holds it to the end
of the wait) then adds up to that wait to every event's trip through a worker. Eddy's
promise is a fresh list or a strategy switch within a fraction of a second, so the worker
consumer waits at most ``Settings.fetch_max_wait_ms`` instead; on Apache Kafka, which
answers as soon as ``fetch_min_bytes`` arrive, this only adds a few empty fetches a
second on an idle worker.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as driver


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher, which is after this.
        consumer._fetch_max_wait_ms = self.app.conf.eddy_fetch_max_wait_ms  # noqa: SLF001
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer = _Consumer


class App(faust.App):
    """A Faust app whose worker consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conf.eddy_fetch_max_wait_ms = fetch_max_wait_ms

    def _new_transport(self) -> driver.Transport:
        return _Transport(self.conf.broker_consumer, self)
