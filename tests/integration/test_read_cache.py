"""The API's read cache against a real Redis: Redis tracks the cached prefixes for it, a
write by anyone invalidates the copy at once, and a lost tracking connection sends every
read back to Redis until tracking is back."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis as redis_lib
import redis.asyncio as aioredis

from api.read_cache import ReadCache

pytestmark = pytest.mark.integration


def gets(r: redis_lib.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_get", {}).get("calls", 0))


async def until(check, timeout_s: float = 5.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


async def test_copies_are_served_without_reads_until_a_write_and_reads_resume_when_tracking_is_lost(
    redis_url: str,
) -> None:
    prefix = f"rc{uuid.uuid4().hex[:6]}:"
    sync = redis_lib.Redis.from_url(redis_url)
    redis = aioredis.from_url(redis_url)
    cache = ReadCache(100, [f"{prefix}recs:"])
    key = f"{prefix}recs:ann"
    sync.set(key, b"v1")  # before tracking starts: no invalidation of it is on its way
    follower = asyncio.create_task(cache.follow(redis))
    try:
        await until(lambda: cache.tracked)
        before = gets(sync)
        values = [(await cache.get(redis, key))[0].value for _ in range(50)]
        assert values == [b"v1"] * 50
        assert gets(sync) - before == 1  # one read, 49 copies

        # Another client (the worker) writes: Redis invalidates the copy, a read soon sees it.
        sync.set(key, b"v2")
        deadline = time.monotonic() + 2.0
        while (await cache.get(redis, key))[0].value != b"v2":
            assert time.monotonic() < deadline, "the write never reached the cache"
            await asyncio.sleep(0.001)
        # A key outside the tracked prefixes is never cached as fresh.
        other = f"{prefix}other"
        sync.set(other, b"x")
        before = gets(sync)
        for _ in range(3):
            await cache.get(redis, other)
        assert gets(sync) - before == 3

        # The tracking connection is killed: invalidations may have been lost, so once
        # tracking is back the copy read before is not trusted (one read), then served again.
        sessions = cache.sessions
        assert sync.client_kill_filter(_type="pubsub") >= 1
        await until(lambda: cache.sessions > sessions and cache.tracked)
        before = gets(sync)
        for _ in range(5):
            assert (await cache.get(redis, key))[0].value == b"v2"
        assert gets(sync) - before == 1
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await redis.aclose()
