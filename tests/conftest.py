"""Session fixtures: a real Kafka-protocol broker (Tansu) and a real redis-server on free
loopback ports, plus helpers that start real ``eddy worker`` / ``eddy api`` processes.

Each test that needs a worker gets its own topic prefix, Redis prefix and consumer group,
so tests sharing the broker and Redis never see each other's events.
"""

from __future__ import annotations

import functools
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis as redis_lib
from kafka import KafkaConsumer, KafkaProducer

from deploy.processes import Children, free_port, wait_for_port
from deploy.topics import ensure_topics
from schemas.keys import Keys
from schemas.settings import Settings


@pytest.fixture(scope="session")
def children(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Children]:
    kids = Children(log_dir=tmp_path_factory.mktemp("logs"))
    yield kids
    kids.stop()


def _use_docker() -> bool:
    """EDDY_TEST_BACKEND=docker runs the suite on containers (Apache Kafka, Redis) instead
    of the local binaries; without a Docker engine those tests skip cleanly."""
    return os.environ.get("EDDY_TEST_BACKEND", "binaries") == "docker"


def _docker_or_skip() -> None:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception as exc:  # no engine, no socket, no permission: all mean "skip"
        pytest.skip(f"EDDY_TEST_BACKEND=docker but no Docker engine answers: {exc}")


@pytest.fixture(scope="session")
def broker(children: Children) -> Iterator[str]:
    if _use_docker():
        _docker_or_skip()
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    port = free_port()
    children.start_broker(port)
    yield f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def redis_url(children: Children, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if _use_docker():
        _docker_or_skip()
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as redis_container:
            host = redis_container.get_container_host_ip()
            yield f"redis://{host}:{redis_container.get_exposed_port(6379)}/0"
        return
    port = free_port()
    children.start_redis(port, tmp_path_factory.mktemp("redis"))
    yield f"redis://127.0.0.1:{port}/0"


class Stack:
    """One isolated Eddy deployment on the shared broker and Redis."""

    def __init__(self, broker: str, redis_url: str, log_dir: Path, **overrides: object) -> None:
        tag = uuid.uuid4().hex[:8]
        self.settings = Settings(
            kafka_bootstrap=broker,
            redis_url=redis_url,
            topic_prefix=f"t{tag}.",
            redis_prefix=f"t{tag}:",
            **{"consumer_group": f"eddy-{tag}", "session_timeout_s": 6.0, "worker_metrics_port": 0,
               "partitions": 4, **overrides},
        )
        self.keys = Keys(self.settings.redis_prefix)
        self.redis = redis_lib.Redis.from_url(redis_url)
        self.children = Children(log_dir=log_dir / tag)
        self.api_url: str | None = None
        ensure_topics(self.settings)
        self._producer: KafkaProducer | None = None
        self.ends: dict[tuple[str, int], int] = {}

    @property
    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            "EDDY_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "EDDY_REDIS_URL": s.redis_url,
            "EDDY_TOPIC_PREFIX": s.topic_prefix,
            "EDDY_REDIS_PREFIX": s.redis_prefix,
            "EDDY_CONSUMER_GROUP": s.consumer_group,
            "EDDY_SESSION_TIMEOUT_S": str(s.session_timeout_s),
            "EDDY_WORKER_METRICS_PORT": "0",
            "EDDY_PARTITIONS": str(s.partitions),
            "EDDY_LOG_LEVEL": "warning",
            "EDDY_SNAPSHOT_DIR": str(self.children.log_dir / "snapshots"),
            **{f"EDDY_{k.upper()}": str(v) for k, v in self.extra_env.items()},
        }

    extra_env: dict[str, object] = {}

    def topic(self, name: str) -> str:
        return self.settings.topic_prefix + name

    def start_worker(self, name: str = "worker", *, wait_s: float = 60.0) -> None:
        before = set(self.redis.hkeys(self.keys.workers))
        proc = self.children.start_eddy(name, ["worker"], self.env)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}; log in {self.children.log_dir}")
            if set(self.redis.hkeys(self.keys.workers)) - before:
                return
            time.sleep(0.1)
        raise TimeoutError(f"worker got no partitions within {wait_s}s")

    def start_api(self, *, need_redis: bool = True, **env: str) -> str:
        """Start ``eddy api``; wait until /readyz reports Kafka (and Redis unless told not to)."""
        port = free_port()
        proc = self.children.start_eddy("api", ["api", "--port", str(port)], {**self.env, **env})
        wait_for_port(port, proc=proc)
        self.api_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            checks = httpx.get(self.api_url + "/readyz").json()["checks"]
            if checks["kafka"] == "ok" and (checks["redis"] == "ok" or not need_redis):
                return self.api_url
            time.sleep(0.1)
        raise TimeoutError("API not ready within 30s")

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all", linger_ms=5)
        return self._producer

    def produce(self, topic: str, values: list[bytes | None], keys: list[bytes | None] | None = None) -> None:
        keys = keys or [None] * len(values)
        futures = [self.producer.send(self.topic(topic), key=key, value=value) for key, value in zip(keys, values)]
        self.producer.flush()
        self.track(futures)

    def track(self, futures: list) -> None:
        """Remember the end offset of every partition written (Tansu's ListOffsets lags)."""
        for fut in futures:
            meta = fut.get(timeout=30)
            tp = (meta.topic, meta.partition)
            self.ends[tp] = max(self.ends.get(tp, 0), meta.offset + 1)

    def applied(self, topic: str) -> int:
        return int(self.redis.hget(self.keys.stats, f"applied:{self.topic(topic)}") or 0)

    def wait_applied(self, topic: str, n: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.applied(topic) >= n:
                return
            time.sleep(0.05)
        raise TimeoutError(f"only {self.applied(topic)} of {n} events applied on {topic}")

    def consume_all(self, topic: str, *, idle_s: float = 3.0, expect: int | None = None) -> list:
        consumer = KafkaConsumer(
            self.topic(topic),
            bootstrap_servers=self.settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=int(idle_s * 1000),
        )
        try:
            out = []
            for rec in consumer:
                out.append(rec)
                if expect is not None and len(out) >= expect:
                    # Keep reading a little longer to catch extras beyond the expected count.
                    consumer.config["consumer_timeout_ms"] = 1000
            return out
        finally:
            consumer.close()

    def dump(self) -> dict[str, object]:
        """Every key of this deployment with its type and value, for exact comparisons."""
        out: dict[str, object] = {}
        for key in sorted(self.redis.scan_iter(match=self.keys.pattern(), count=1000)):
            kind = self.redis.type(key).decode()
            if kind == "string":
                out[key.decode()] = self.redis.get(key)
            elif kind == "hash":
                out[key.decode()] = self.redis.hgetall(key)
            elif kind == "zset":
                out[key.decode()] = self.redis.zrange(key, 0, -1, withscores=True)
            else:
                out[key.decode()] = kind
        return out

    def close(self) -> None:
        self.children.stop()
        if self._producer is not None:
            self._producer.close()


#: The routes a user's token opens, for that user's own id (a group list: one that includes
#: them); every other route but the health checks refuses a token (api/deps.py).
TOKEN_ROUTES = {("GET", "/api/recommendations"), ("GET", "/api/users/{user_id}/profile"),
                ("GET", "/api/users/{user_id}/counts"), ("GET", "/api/recommendations/group"),
                ("DELETE", "/api/users/{user_id}")}
OPEN_ROUTES = {("GET", "/healthz"), ("GET", "/readyz")}


def until(check: Callable[[], object], timeout_s: float = 30.0, every_s: float = 0.05) -> object:
    """Poll ``check`` until it returns something truthy; return it (fail after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError("condition not met in time")


def post_events(api: str, events: list[dict], **kw: object) -> None:
    """POST events to the API and insist they were accepted."""
    resp = httpx.post(api + "/api/events", json=events, **kw)
    assert resp.status_code == 202, resp.text


@pytest.fixture
def stack(broker: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(broker, redis_url, tmp_path)
    yield s
    s.close()


@functools.cache
def can_raise_priority() -> bool:
    """Whether this process may put others on a real-time policy (root or CAP_SYS_NICE)."""
    from deploy.runtime import serve_first

    child = subprocess.Popen(["sleep", "5"])
    try:
        return serve_first(1, child.pid)
    finally:
        child.kill()
        child.wait()


def wait_caught_up(stack: Stack, topics: list[str], timeout_s: float = 60.0) -> None:
    """Block until the stack's group has committed past everything the stack produced."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=stack.settings.kafka_bootstrap)
    wanted = {tp: end for tp, end in stack.ends.items() if tp[0] in {stack.topic(t) for t in topics}}
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            group = stack.settings.consumer_group
            committed = {
                (tp.topic, tp.partition): meta.offset
                for tp, meta in admin.list_group_offsets(group).get(group, {}).items()
            }
            if all(committed.get(tp, -1) >= end for tp, end in wanted.items()):
                return
            time.sleep(0.2)
        raise TimeoutError(f"consumer group did not catch up: {committed} < {wanted}")
    finally:
        admin.close()
