"""The API's copies of the read model: fresh while Redis tracks them, stale while Redis is
away. (The tracking connection itself is tested against a real Redis in
tests/integration/test_read_cache.py.)"""

from __future__ import annotations

import asyncio
from unittest.mock import AsyncMock

import pytest
from fastapi import HTTPException
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from api.read_cache import ReadCache

EVERY_KEY = [""]  # the prefixes tracked


def redis_answering(values: dict[str, bytes | None]) -> AsyncMock:
    redis = AsyncMock(spec_set=Redis)
    redis.get = AsyncMock(side_effect=lambda key: values.get(key))  # the class's get is not marked async
    return redis


def redis_away() -> AsyncMock:
    redis = AsyncMock(spec_set=Redis)
    redis.get = AsyncMock(side_effect=RedisConnectionError("Connection refused"))
    return redis


async def read(cache: ReadCache, redis: AsyncMock, key: str) -> tuple[bytes | None, bool]:
    entry, stale = await cache.get(redis, key)
    return (None if entry is None else entry.value), stale


async def test_a_tracked_copy_is_served_without_a_read_until_its_key_is_invalidated() -> None:
    cache = ReadCache(10, EVERY_KEY)
    cache.tracking_started()
    values = {"recs:ann": b"v1"}
    redis = redis_answering(values)
    assert await read(cache, redis, "recs:ann") == (b"v1", False)
    values["recs:ann"] = b"v2"  # written, but Redis has not said so yet
    assert await read(cache, redis, "recs:ann") == (b"v1", False)
    assert redis.get.await_count == 1
    cache.invalidate([b"recs:ann"])
    assert await read(cache, redis, "recs:ann") == (b"v2", False)
    assert redis.get.await_count == 2


async def test_an_unknown_key_is_cached_too_until_it_is_created() -> None:
    cache = ReadCache(10, EVERY_KEY)
    cache.tracking_started()
    values: dict[str, bytes | None] = {}
    redis = redis_answering(values)
    assert await read(cache, redis, "recs:new") == (None, False)
    assert await read(cache, redis, "recs:new") == (None, False)
    assert redis.get.await_count == 1
    values["recs:new"] = b"first list"
    cache.invalidate(["recs:new"])
    assert await read(cache, redis, "recs:new") == (b"first list", False)


async def test_without_tracking_every_read_goes_to_redis() -> None:
    started_elsewhere = ReadCache(10, ["recs:"])
    started_elsewhere.tracking_started()
    # Not started, switched off, or a key outside the tracked prefixes.
    for cache in (ReadCache(10, EVERY_KEY), ReadCache(10, EVERY_KEY, tracking=False), started_elsewhere):
        redis = redis_answering({"popular": b"v1"})
        for _ in range(3):
            assert await read(cache, redis, "popular") == (b"v1", False)
        assert redis.get.await_count == 3


async def test_losing_tracking_distrusts_every_copy_and_a_flush_does_too() -> None:
    cache = ReadCache(10, EVERY_KEY)
    cache.tracking_started()
    redis = redis_answering({"a": b"1", "b": b"2"})
    for key in ("a", "b"):
        await read(cache, redis, key)
    cache.tracking_stopped()
    cache.tracking_started()  # invalidations sent in between are lost: nothing read before counts
    for key in ("a", "b"):
        await read(cache, redis, key)
    assert redis.get.await_count == 4
    cache.invalidate(None)  # FLUSHALL / FLUSHDB
    await read(cache, redis, "a")
    assert redis.get.await_count == 5


async def test_a_read_racing_an_invalidation_of_its_key_is_served_once_but_not_trusted() -> None:
    cache = ReadCache(10, EVERY_KEY)
    cache.tracking_started()
    answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    redis = AsyncMock(spec_set=Redis)

    async def in_flight(key: str) -> bytes:
        return await answer

    redis.get = AsyncMock(side_effect=in_flight)
    reading = asyncio.create_task(cache.get(redis, "recs:ann"))
    await asyncio.sleep(0)
    cache.invalidate([b"recs:ann"])  # the worker wrote while the GET was in flight
    answer.set_result(b"old")
    entry, stale = await reading
    assert (entry.value, stale, entry.fresh) == (b"old", False, False)
    redis.get = AsyncMock(return_value=b"new")
    assert await read(cache, redis, "recs:ann") == (b"new", False)


async def test_what_a_route_derived_from_a_copy_goes_with_it() -> None:
    cache = ReadCache(10, EVERY_KEY)
    cache.tracking_started()
    values = {"recs:ann": b"v1"}
    redis = redis_answering(values)
    entry, _ = await cache.get(redis, "recs:ann")
    entry.memo["doc"] = "parsed v1"
    cache.invalidate(["recs:ann"])
    same, _ = await cache.get(redis, "recs:ann")  # re-read, same bytes: the memo still holds
    assert same.memo == {"doc": "parsed v1"}
    values["recs:ann"] = b"v2"
    cache.invalidate(["recs:ann"])
    changed, _ = await cache.get(redis, "recs:ann")
    assert (changed.value, changed.memo) == (b"v2", {})


async def test_the_last_value_read_is_served_stale_while_redis_is_away() -> None:
    cache = ReadCache(10, EVERY_KEY)
    assert await read(cache, redis_answering({"recs:ann": b"v1"}), "recs:ann") == (b"v1", False)
    assert await read(cache, redis_away(), "recs:ann") == (b"v1", True)
    assert await read(cache, redis_away(), "recs:bob") == (None, True)  # never read here: cold start


async def test_a_key_gone_from_redis_is_forgotten() -> None:
    cache = ReadCache(10, EVERY_KEY)
    await read(cache, redis_answering({"recs:ann": b"v1"}), "recs:ann")
    assert await read(cache, redis_answering({}), "recs:ann") == (None, False)  # a user deleted
    assert await read(cache, redis_away(), "recs:ann") == (None, True)


async def test_at_most_size_keys_are_kept_least_recent_out() -> None:
    cache = ReadCache(2, EVERY_KEY)
    up = redis_answering({"a": b"1", "b": b"2", "c": b"3"})
    for key in ("a", "b", "a", "c"):  # "b" is the least recently read when "c" comes
        await cache.get(up, key)
    down = redis_away()
    assert [await read(cache, down, k) for k in ("a", "b", "c")] == [(b"1", True), (None, True), (b"3", True)]


async def test_size_0_reads_redis_every_time_and_answers_503_while_it_is_away() -> None:
    cache = ReadCache(0, EVERY_KEY)
    cache.tracking_started()
    redis = redis_answering({"recs:ann": b"v1"})
    assert [await read(cache, redis, "recs:ann") for _ in range(2)] == [(b"v1", False)] * 2
    assert redis.get.await_count == 2
    with pytest.raises(HTTPException) as err:
        await cache.get(redis_away(), "recs:ann")
    assert (err.value.status_code, err.value.detail) == (503, "read model unavailable: ConnectionError")
