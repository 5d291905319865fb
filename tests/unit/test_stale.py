"""The API's last-good copies of the read model, served while Redis is away."""

from __future__ import annotations

from unittest.mock import AsyncMock

import pytest
from fastapi import HTTPException
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from api.stale import LastGood


def redis_answering(values: dict[str, bytes | None]) -> AsyncMock:
    redis = AsyncMock(spec_set=Redis)
    redis.get = AsyncMock(side_effect=lambda key: values.get(key))  # the class's get is not marked async
    return redis


def redis_away() -> AsyncMock:
    redis = AsyncMock(spec_set=Redis)
    redis.get = AsyncMock(side_effect=RedisConnectionError("Connection refused"))
    return redis


async def test_the_last_value_read_is_served_stale_while_redis_is_away() -> None:
    last = LastGood(10)
    assert await last.get(redis_answering({"recs:ann": b"v1"}), "recs:ann") == (b"v1", False)
    assert await last.get(redis_away(), "recs:ann") == (b"v1", True)
    assert await last.get(redis_away(), "recs:bob") == (None, True)  # never read here: cold start


async def test_a_key_gone_from_redis_is_forgotten() -> None:
    last = LastGood(10)
    await last.get(redis_answering({"recs:ann": b"v1"}), "recs:ann")
    assert await last.get(redis_answering({}), "recs:ann") == (None, False)  # a user deleted
    assert await last.get(redis_away(), "recs:ann") == (None, True)


async def test_at_most_size_keys_are_kept_least_recent_out() -> None:
    last = LastGood(2)
    up = redis_answering({"a": b"1", "b": b"2", "c": b"3"})
    for key in ("a", "b", "a", "c"):  # "b" is the least recently read when "c" comes
        await last.get(up, key)
    down = redis_away()
    assert [await last.get(down, k) for k in ("a", "b", "c")] == [(b"1", True), (None, True), (b"3", True)]


async def test_size_0_answers_503_as_before() -> None:
    with pytest.raises(HTTPException) as err:
        await LastGood(0).get(redis_away(), "recs:ann")
    assert (err.value.status_code, err.value.detail) == (503, "read model unavailable: ConnectionError")
