"""Recommendations, profiles, 'forget me' and the recommender's live quality."""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ulid_transform import ulid_now

from api.deps import (
    KeysDep,
    ProducerDep,
    RedisDep,
    caller,
    credentials,
    require_forget_access,
    require_read_key,
    require_user_access,
)
from api.producer import ProducerUnavailable
from api.read_cache import Entry
from api.responses import ORJSONResponse
from api.routes.reads import ACTIONS, IdPath, decode_hash, read_model
from online_models.diversity import diversify
from schemas.events import ID_PATTERN, MAX_ID_LENGTH, UserDeletedEvent

router = APIRouter(prefix="/api", tags=["recommendations"])

IDS_PATTERN = r"^[A-Za-z0-9_.:@+\-=~#$!*,]*$"


def split_ids(raw: str | None, field: str, limit: int) -> list[str]:
    ids = [i for i in (raw or "").split(",") if i]
    if len(ids) > limit:
        raise HTTPException(422, [{"field": field, "reason": f"at most {limit} ids"}])
    if any(len(i) > MAX_ID_LENGTH for i in ids):
        raise HTTPException(422, [{"field": field, "reason": f"ids are at most {MAX_ID_LENGTH} characters"}])
    return ids


def _category(entry: dict[str, Any]) -> str | None:
    return (entry.get("item") or {}).get("category")


def _source(entry: dict[str, Any]) -> str | None:
    item = entry.get("item") or {}
    return item.get("source") or item.get("domain")


def _serve(
    doc: dict[str, Any], k: int, exclude: set[str], category: str | None, max_share: float
) -> list[dict[str, Any]]:
    """Filter the stored ranking, then apply the diversity guard at the served length."""
    entries = doc["items"]
    if exclude or category is not None:
        entries = [
            e for e in entries if e["item_id"] not in exclude and (category is None or _category(e) == category)
        ]
    chosen = diversify(entries, k, max_share, [] if category is not None else [_category, _source])
    return [{**e, "position": n} for n, e in enumerate(chosen)]


def _cold_start(popular: bytes | None) -> dict[str, Any]:
    """The list of a user Eddy knows nothing about: the recommender's new-user blend, as the
    worker publishes it (empty, "popularity", until it has)."""
    data = orjson.loads(popular) if popular else {"items": [], "updated_at": None}
    return {
        "items": [
            {"item_id": e["item_id"], "score": e["score"], "reason": e.get("reason", "popular"), "item": e.get("item", {})}
            for e in data["items"]
        ],
        "model": data.get("model", "popularity"),
        "model_version": data.get("model_version", "1"),
        "computed_at": data["updated_at"],
    }


def _head(entry: Entry | None, cold: bool) -> dict[str, Any]:
    """The list's fields besides its items, read once per cached copy."""
    if entry is None:
        return _head_of(_cold_start(None))
    head = entry.memo.get("head")
    if head is None:
        head = entry.memo["head"] = _head_of(_parse(entry.value, cold))
    return head


def _head_of(doc: dict[str, Any]) -> dict[str, Any]:
    return {f: doc.get(f) for f in ("model", "model_version", "computed_at")} | {"reflects": doc.get("reflects", [])}


def _parse(value: bytes | None, cold: bool) -> dict[str, Any]:
    return _cold_start(value) if cold else orjson.loads(value)


def _items(entry: Entry | None, cold: bool, k: int, exclude: set[str], category: str | None,
           max_share: float) -> orjson.Fragment:
    """The served items as JSON; unfiltered, they are rendered once per cached copy and k
    (the copy keeps its bytes and these renderings, not the parsed list)."""
    if exclude or category is not None or entry is None:
        doc = _parse(None if entry is None else entry.value, cold)
        return orjson.Fragment(orjson.dumps(_serve(doc, k, exclude, category, max_share)))
    rendered = entry.memo.get(k)
    if rendered is None:
        rendered = entry.memo[k] = orjson.Fragment(
            orjson.dumps(_serve(_parse(entry.value, cold), k, exclude, None, max_share))
        )
    return rendered


class RecsQuery(BaseModel):
    """The query of GET /api/recommendations, validated in one pass: FastAPI's resolution
    of four query parameters and an access dependency cost more than the rest of the request
    (a list served from the read cache), so the route reads the raw request instead."""

    model_config = ConfigDict(extra="ignore")

    user_id: Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
    k: Annotated[int, Field(ge=1, le=100, description="How many items.")] = 10
    exclude: Annotated[str | None, Field(max_length=20_000, pattern=IDS_PATTERN,
                                         description="Item ids to leave out, comma separated.")] = None
    category: Annotated[str | None, Field(min_length=1, max_length=200,
                                          description="Only items of this category.")] = None


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters for a model's fields, as FastAPI would document them."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    return [{"name": name, "in": "query", "required": name in required, "schema": prop}
            for name, prop in schema["properties"].items()]


def _recs_query(request: Request) -> RecsQuery:
    try:
        return RecsQuery.model_validate(dict(request.query_params))  # the last of repeated names, as FastAPI
    except ValidationError as exc:
        # Reported like FastAPI's own query validation (the app's readable 422).
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]) from None


#: How ``api/main.py`` registers :func:`get_recommendations`: on the app itself, ahead of
#: every router (routes are matched in order, and an included router is a hop of its own).
SERVING_ROUTE = {
    "path": "/api/recommendations",
    "methods": ["GET"],
    "tags": ["recommendations"],
    "openapi_extra": {"parameters": _query_parameters(RecsQuery),
                      "security": [{"APIKeyHeader": []}, {"HTTPBearer": []}]},
    "responses": {422: {"description": "A query parameter is missing, out of range or malformed: one "
                                       "{field, reason} per problem."}},
}


async def get_recommendations(request: Request) -> Response:
    """A user's fresh top-k with scores and reasons; an unknown user gets the cold-start list.

    ``reflects`` names the user's latest events the list was computed after: a client
    that sent an event knows its list has caught up once one of its ids shows up there.
    While Redis is away, the last list this process served (or the cold-start list) comes
    back with ``"stale": true`` instead of a 503."""
    query = _recs_query(request)
    state = request.app.state  # read directly: dependencies cost more than this request's work
    if not state.open_reads:
        caller(request, *credentials(request), users={query.user_id})
    settings, redis, cache, keys = state.settings, state.redis, state.read_cache, state.keys
    excluded = set(split_ids(query.exclude, "exclude", 500)) if query.exclude else set()
    entry, stale = await cache.get(redis, keys.recs(query.user_id))
    cold = entry is None or entry.value is None
    if cold:
        entry, stale_popular = await cache.get(redis, keys.popular_list)
        stale = stale or stale_popular
        if entry is not None and entry.value is None:
            entry = None
    # A plain Response: ORJSONResponse is deprecated in this FastAPI and warns on every call.
    return Response(orjson.dumps(
        {
            "user_id": query.user_id,
            "rec_id": ulid_now(),
            "cold_start": cold,
            "stale": stale,
            "items": _items(entry, cold, query.k, excluded, query.category, settings.diversity_max_share),
            **_head(entry, cold),
        }
    ), media_type="application/json")


@router.get("/recommendations/group", openapi_extra={"security": [{"APIKeyHeader": []}, {"HTTPBearer": []}]})
async def get_group_recommendations(
    request: Request,
    redis: RedisDep,
    keys: KeysDep,
    user_ids: Annotated[str, Query(min_length=1, max_length=5_000, pattern=r"^[A-Za-z0-9_.:@+\-=~#$!*,]+$")],
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> ORJSONResponse:
    """One list a whole group would enjoy: each member's scores averaged, the least
    happy member weighing in (an item missing from a member's list counts as 0), leaving out
    what any member acted on lately (their last 50 items).

    Open to the read key, and to the token of any member. A member's token sees why an item
    is there for them only: for another member it is "for bob", not bob's history or tastes,
    and ``cold_start_members`` (which ids Eddy knows nothing about) is left out."""
    members = list(dict.fromkeys(split_ids(user_ids, "user_ids", 20)))
    if len(members) < 2:
        raise HTTPException(422, [{"field": "user_ids", "reason": "a group needs at least 2 distinct user ids"}])
    member = caller(request, *credentials(request), users=set(members))
    docs = await read_model(redis.mget([keys.recs(u) for u in members] + [keys.popular_list]))
    popular = _cold_start(docs[-1])
    lists = [orjson.loads(d) if d else popular for d in docs[:-1]]
    per_member: list[dict[str, float]] = []
    shown: dict[str, dict[str, Any]] = {}
    reasons: list[dict[str, str]] = []
    acted = {item_id for data in lists for item_id in data.get("acted", ())}  # by any member
    for data in lists:
        top = max((e["score"] for e in data["items"]), default=0.0) or 1.0
        per_member.append({e["item_id"]: e["score"] / top for e in data["items"]})
        reasons.append({e["item_id"]: e.get("reason", "") for e in data["items"]})
        for e in data["items"]:
            shown.setdefault(e["item_id"], e.get("item", {}))
    scored = []
    for item_id in shown.keys() - acted:
        values = [m.get(item_id, 0.0) for m in per_member]
        scored.append((0.7 * sum(values) / len(values) + 0.3 * min(values), item_id))
    scored.sort(reverse=True)

    def reason(item_id: str) -> str:
        """Why: the reason of the member who wants the item most (by their own list)."""
        best = max(range(len(members)), key=lambda j: (per_member[j].get(item_id, 0.0), -j))
        if member is not None and members[best] != member:
            return f"for {members[best]}"  # another member's history is theirs
        why = reasons[best].get(item_id) or "popular"
        return f"for {members[best]}: {why}"
    body: dict[str, Any] = {"user_ids": members, "rec_id": ulid_now()}
    if member is None:
        body["cold_start_members"] = [u for u, d in zip(members, docs) if d is None]
    body["items"] = [{"item_id": i, "score": round(s, 6), "position": n, "reason": reason(i), "item": shown[i]}
                     for n, (s, i) in enumerate(scored[:k])]
    return ORJSONResponse(body)


def _facets(fields: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    out = []
    for field, count in fields.items():
        if not field.startswith(f"n:{kind}:"):
            continue
        name = field[len(f"n:{kind}:") :]
        rn = fields.get(f"rn:{kind}:{name}", 0)
        out.append(
            {
                "name": name,
                "count": count,
                "positive": fields.get(f"pos:{kind}:{name}", 0),
                "mean_rating": round(fields[f"rsum:{kind}:{name}"] / rn, 3) if rn else None,
            }
        )
    out.sort(key=lambda f: (-f["positive"], -f["count"], f["name"]))
    return out


@router.get("/users/{user_id}/profile", dependencies=[Depends(require_user_access)])
async def get_user_profile(user_id: IdPath, redis: RedisDep, keys: KeysDep) -> ORJSONResponse:
    """Favourite categories, tags and sources, rating style, diversity, interaction count."""
    raw = await read_model(redis.hgetall(keys.user_counts(user_id)))
    if not raw:
        raise HTTPException(404, f"unknown user {user_id!r}")
    fields = decode_hash(raw)
    counts = {a: fields[a] for a in ACTIONS if a in fields}
    categories = _facets(fields, "cat")
    total = sum(c["count"] for c in categories)
    entropy = -sum(c["count"] / total * math.log(c["count"] / total) for c in categories) if total else 0.0
    diversity = entropy / math.log(len(categories)) if len(categories) > 1 else 0.0
    n_ratings = fields.get("rating_n", 0)
    mean_rating = fields["rating_sum"] / n_ratings if n_ratings else None
    style = None
    if mean_rating is not None:
        style = "generous" if mean_rating >= 4 else "critical" if mean_rating <= 2.5 else "balanced"
    return ORJSONResponse(
        {
            "user_id": user_id,
            "interactions": sum(v for a, v in counts.items() if a != "impression"),
            "counts": counts,
            "favourite_categories": categories[:5],
            "favourite_tags": _facets(fields, "tag")[:5],
            "favourite_sources": _facets(fields, "src")[:5],
            "declared_interests": {k[5:]: v for k, v in fields.items() if k.startswith("pref:")},
            "rating_style": {"mean": round(mean_rating, 3) if mean_rating is not None else None,
                             "ratings": n_ratings, "style": style},
            "diversity": round(diversity, 3),
        }
    )


@router.delete("/users/{user_id}", status_code=202, dependencies=[Depends(require_forget_access)])
async def delete_user(user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)],
                      producer: ProducerDep) -> ORJSONResponse:
    """Forget me: emits user_deleted; the worker drops the user from its models and Redis.
    Needs the producer key, or the user's own token."""
    event = UserDeletedEvent(type="user_deleted", user_id=user_id, event_id=ulid_now(), ts=time.time())
    try:
        await producer.send_events([event])
    except ProducerUnavailable as exc:
        raise HTTPException(503, f"Kafka unavailable, nothing accepted: {exc}", headers={"Retry-After": "5"}) from exc
    return ORJSONResponse({"user_id": user_id, "event_id": event.event_id}, 202)


@router.get("/models/recommender", dependencies=[Depends(require_read_key)])
async def get_recommender_quality(redis: RedisDep, keys: KeysDep) -> ORJSONResponse:
    """Online HR@10 and NDCG@10 (test-then-train on the live stream) beside popularity,
    and the click-through rate of served lists by position, summed over workers; and the
    blend weights each worker's ranker has learned (per user segment, plus the offsets per
    item segment)."""
    raw = await read_model(redis.hgetall(keys.models))
    # One field per worker and model ("recs:host:pid", "bids:host:pid").
    workers = [orjson.loads(v) for k, v in raw.items() if k.startswith(b"recs:")]
    totals: dict[str, dict[str, float]] = {}
    ctr: dict[str, list[int]] = {}
    for w in workers:
        for name, s in w["scores"].items():
            t = totals.setdefault(name, {"targets": 0, "hits": 0, "ndcg_sum": 0.0})
            for f in t:
                t[f] += s[f]
        for pos, cell in w["ctr_by_position"].items():
            acc = ctr.setdefault(pos, [0, 0])
            acc[0] += cell["impressions"]
            acc[1] += cell["clicks"]
    models = {
        name: {
            "targets": t["targets"],
            "hr_at_10": t["hits"] / t["targets"] if t["targets"] else None,
            "ndcg_at_10": t["ndcg_sum"] / t["targets"] if t["targets"] else None,
        }
        for name, t in totals.items()
    }
    impressions = sum(c[0] for c in ctr.values())
    return ORJSONResponse(
        {
            "model": "hybrid",
            "model_version": workers[0]["model_version"] if workers else None,
            "workers": len(workers),
            "online": models,
            "weights": {k.decode().split(":", 1)[1]: w.get("weights") for k, w in
                        zip((k for k in raw if k.startswith(b"recs:")), workers)},
            "ctr": {
                "overall": sum(c[1] for c in ctr.values()) / impressions if impressions else None,
                "by_position": {
                    p: {"impressions": i, "clicks": c, "ctr": c / i if i else None}
                    for p, (i, c) in sorted(ctr.items(), key=lambda kv: int(kv[0]))
                },
            },
        }
    )
