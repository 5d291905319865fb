"""Read endpoints over the Redis read model: one key read per request."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query

from api.deps import KeysDep, RedisDep, require_read_key, require_user_access
from api.read_cache import ReadCacheDep
from api.responses import ORJSONResponse
from schemas.events import ID_PATTERN, MAX_ID_LENGTH

# Each route states who may read it: the catalogue and popular lists need the read key, a
# user's counts the read key or that user's token (api/deps.py).
router = APIRouter(prefix="/api", tags=["read model"])

ACTIONS = ("impression", "click", "view", "like", "dislike", "rate", "save", "hide")
IdPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]


async def read_model(coro: Any) -> Any:
    try:
        return await coro
    except HTTPException:
        raise
    except Exception as exc:  # redis errors of any kind: the read model is unavailable
        raise HTTPException(503, f"read model unavailable: {type(exc).__name__}") from exc


def decode_hash(raw: dict[bytes, bytes]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        text = v.decode()
        try:
            out[k.decode()] = orjson.loads(text) if text[:1] in "-0123456789[{" else text
        except orjson.JSONDecodeError:
            out[k.decode()] = text
    return out


@router.get("/items/{item_id}", dependencies=[Depends(require_read_key)])
async def get_item(item_id: IdPath, redis: RedisDep, keys: KeysDep) -> ORJSONResponse:
    """An item as last scraped or published."""
    doc = await read_model(redis.get(keys.item(item_id)))
    if doc is None:
        raise HTTPException(404, f"unknown item {item_id!r}")
    return ORJSONResponse(orjson.loads(doc))


@router.get("/popular", dependencies=[Depends(require_read_key)])
async def get_popular(
    redis: RedisDep, keys: KeysDep, cache: ReadCacheDep, k: Annotated[int, Query(ge=1, le=100)] = 10
) -> ORJSONResponse:
    """The most positively received items that can still be served (``stale`` while Redis is away)."""
    entry, stale = await cache.get(redis, keys.popular_list)
    data = orjson.loads(entry.value) if entry is not None and entry.value else {"items": [], "updated_at": None}
    return ORJSONResponse({"items": data["items"][:k], "updated_at": data["updated_at"], "stale": stale})


@router.get("/users/{user_id}/counts", dependencies=[Depends(require_user_access)])
async def get_user_counts(user_id: IdPath, redis: RedisDep, keys: KeysDep) -> ORJSONResponse:
    """A user's interaction counts by action and declared interests."""
    raw = await read_model(redis.hgetall(keys.user_counts(user_id)))
    if not raw:
        raise HTTPException(404, f"unknown user {user_id!r}")
    fields = decode_hash(raw)
    interests = {k[5:]: v for k, v in fields.items() if k.startswith("pref:")}
    counts = {k: v for k, v in fields.items() if k in ACTIONS}
    return ORJSONResponse(
        {"user_id": user_id, "counts": counts, "interests": interests, "last_ts": fields.get("last_ts")}
    )
