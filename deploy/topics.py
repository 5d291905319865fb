"""Declares Eddy's topics with their partition counts, so nothing relies on auto-creation."""

from __future__ import annotations

import logging
import time

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.settings import Settings
from schemas.topics import CATALOGUE

log = logging.getLogger(__name__)


def ensure_topics(settings: Settings, *, timeout_s: float = 60.0) -> list[str]:
    """Create every catalogue topic that does not exist yet; returns the names created.

    Retries while the broker is starting, up to ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=settings.bootstrap_servers,
                client_id="eddy-admin",
                request_timeout_ms=10_000,
            )
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise
            log.info("waiting for Kafka at %s: %s", settings.kafka_bootstrap, exc)
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
