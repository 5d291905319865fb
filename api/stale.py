"""The last read-model documents the API served, kept to answer while Redis is away.

The hot read paths (a user's list, the popular list) remember the last value they read per
key, in a bounded LRU in each API process. When Redis does not answer, they serve that copy
marked ``"stale": true`` (a user never read here gets the cold-start list, itself stale or
empty) instead of a 503, so a UI keeps showing something sensible through a Redis restart.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from redis.exceptions import RedisError


class LastGood:
    """Per key, the last value read from Redis (at most ``size`` keys, least recent out)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: OrderedDict[str, bytes] = OrderedDict()

    async def get(self, redis: Any, key: str) -> tuple[bytes | None, bool]:
        """``(value, stale)``: Redis's value, or the remembered one when Redis is away."""
        try:
            value = await redis.get(key)
        except (TimeoutError, RedisError, OSError) as exc:
            if self.size == 0:
                raise HTTPException(503, f"read model unavailable: {type(exc).__name__}") from exc
            value = self._values.get(key)
            if value is not None:
                self._values.move_to_end(key)
            return value, True
        if self.size:
            if value is None:
                self._values.pop(key, None)
            else:
                self._values[key] = value
                self._values.move_to_end(key)
                if len(self._values) > self.size:
                    self._values.popitem(last=False)
        return value, False


async def get_last_good(request: Request) -> LastGood:
    return request.app.state.last_good


LastGoodDep = Annotated[LastGood, Depends(get_last_good)]
