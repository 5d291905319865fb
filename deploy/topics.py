"""Declares Eddy's topics with their partition counts, so nothing relies on auto-creation."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.settings import Settings
from schemas.topics import CATALOGUE

log = logging.getLogger(__name__)


def ensure_topics(
    settings: Settings, *, timeout_s: float = 60.0, on_wait: Callable[[str], None] | None = None,
) -> list[str]:
    """Create every catalogue topic that does not exist yet; returns the names created.

    Retries while the broker is starting, up to ``timeout_s``, telling ``on_wait`` why (at
    most every 5 s).
    """
    deadline = time.monotonic() + timeout_s
    told = float("-inf")
    while True:
        try:
            remaining_ms = (deadline - time.monotonic()) * 1000
            admin = KafkaAdminClient(
                bootstrap_servers=settings.bootstrap_servers,
                client_id="eddy-admin",
                request_timeout_ms=10_000,
                bootstrap_timeout_ms=int(min(10_000, max(1_000, remaining_ms))),  # no attempt outlasts the deadline
            )
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise
            log.info("waiting for Kafka at %s: %s", settings.kafka_bootstrap, exc)
            if on_wait is not None and time.monotonic() - told >= 5.0:
                told = time.monotonic()
                on_wait(f"waiting for Kafka at {settings.kafka_bootstrap} ({type(exc).__name__}: {exc}); "
                        f"giving up in {max(0.0, deadline - told):.0f} s")
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(spec.full_name(settings), settings.partitions, settings.replication_factor,
                     topic_configs=dict(spec.configs))
            for spec in CATALOGUE
            if spec.full_name(settings) not in existing
        ]
        created = []
        for topic in wanted:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()
