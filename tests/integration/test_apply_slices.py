"""A batch applied in atomic slices: every effect once, and a crash between two slices
loses nothing and doubles nothing when the batch comes again."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis.asyncio as aredis

from schemas.events import validate_event
from schemas.keys import Keys
from streams.coalesce import APPLY_SCRIPT
from streams.pipeline import apply_batch

pytestmark = pytest.mark.integration


class Counting:
    """A Redis client that counts the batch's apply calls and can fail the n-th one."""

    def __init__(self, redis: aredis.Redis, fail_at: int | None = None) -> None:
        self.redis, self.fail_at, self.applies = redis, fail_at, 0

    async def eval(self, script: str, numkeys: int, *args: Any) -> Any:
        if script == APPLY_SCRIPT and "applied:t" in args:  # a slice, not a list write
            self.applies += 1
            if self.applies == self.fail_at:
                raise RuntimeError("worker killed between two slices")
        return await self.redis.eval(script, numkeys, *args)


def count_effect(effects: Any, event: Any, keys: Keys) -> None:
    effects.hincrby(keys.user_counts(event.user_id), event.action, 1)


def events(n: int) -> list[Any]:
    return [validate_event({"type": "interaction", "event_id": f"e{i}", "ts": 1_700_000_000 + i,
                            "user_id": f"u{i % 3}", "item_id": f"i{i}", "action": "click"}) for i in range(n)]


async def counts(r: aredis.Redis, keys: Keys) -> dict[str, int]:
    return {u: int(await r.hget(keys.user_counts(u), "click") or 0) for u in ("u0", "u1", "u2")}


async def test_slices_apply_every_event_once(redis_url: str) -> None:
    keys = Keys(f"t{uuid.uuid4().hex[:8]}:")
    r = aredis.from_url(redis_url)
    client = Counting(r)
    batch = events(10)
    result = await apply_batch(client, keys, batch, count_effect, topic="t", dedupe_ttl_s=3600, max_events=4)
    assert client.applies == 3  # 4 + 4 + 2 events
    assert result.applied == 10
    assert await counts(r, keys) == {"u0": 4, "u1": 3, "u2": 3}
    assert int(await r.hget(keys.stats, "applied:t")) == 10
    await r.aclose()


async def test_a_crash_between_slices_is_made_whole_by_redelivery(redis_url: str) -> None:
    keys = Keys(f"t{uuid.uuid4().hex[:8]}:")
    r = aredis.from_url(redis_url)
    batch = events(10)
    with pytest.raises(RuntimeError):
        await apply_batch(Counting(r, fail_at=2), keys, batch, count_effect, topic="t", dedupe_ttl_s=3600, max_events=4)
    # The first slice (e0..e3) landed with its ids and its share of the counter, nothing else.
    assert await counts(r, keys) == {"u0": 2, "u1": 1, "u2": 1}
    assert int(await r.hget(keys.stats, "applied:t")) == 4
    result = await apply_batch(Counting(r), keys, batch, count_effect, topic="t", dedupe_ttl_s=3600, max_events=4)
    assert (result.applied, result.duplicates) == (6, 4)
    assert await counts(r, keys) == {"u0": 4, "u1": 3, "u2": 3}
    assert int(await r.hget(keys.stats, "applied:t")) == 10
    await r.aclose()
