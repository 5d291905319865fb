"""Bids: each bid's score and outcome, draft scoring, and the bid model's live quality."""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import ValidationError

from api.deps import KeysDep, RedisDep, SettingsDep, require_read_key
from api.responses import ORJSONResponse
from api.routes.events import parse_body, read_body_capped
from api.routes.reads import decode_hash, read_model
from online_models.bids import BidFeaturizer, JobStats, ProfileHistory, WinModel
from schemas.events import ID_PATTERN, MAX_ID_LENGTH, BidEvent, validation_errors

router = APIRouter(prefix="/api", tags=["bids"], dependencies=[Depends(require_read_key)])

IdPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
_featurizer = BidFeaturizer()  # stateless use only: histories are passed in from Redis


@router.get("/bids/{bid_id}")
async def get_bid(bid_id: IdPath, redis: RedisDep, keys: KeysDep) -> ORJSONResponse:
    """A bid, its win probability when placed (beside the baseline), and its outcome once it lands."""
    raw = await read_model(redis.hgetall(keys.bid(bid_id)))
    if not raw:
        raise HTTPException(404, f"unknown bid {bid_id!r}")
    f = decode_hash(raw)
    won = f.get("won")
    return ORJSONResponse({
        "bid_id": bid_id,
        "bid": f.get("bid"),
        "placed_at": f.get("placed_at"),
        "score": f.get("score"),
        "baseline": f.get("baseline"),
        "model_version": f.get("model_version"),
        "expires_at": f.get("expires_at"),
        "status": "won" if won == 1 else "lost" if won == 0 else "expired" if "expired_at" in f else "pending",
        "outcome": None if won is None else {"won": bool(won), "at": f.get("outcome_at"), "delay_s": f.get("delay_s")},
    })


async def _snapshot(redis: Any, keys: Any) -> dict[str, Any]:
    raw = await read_model(redis.hgetall(keys.bid_models))
    snapshots = [orjson.loads(v) for v in raw.values()]
    if not snapshots:
        return WinModel().snapshot() | {"skills": []}
    return max(snapshots, key=lambda s: s["learned"])  # the worker that has learned most


@router.post("/bids/score", openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"type": "object", "description": "A bid event's fields without type and bid_id."}}}}})
async def score_draft_bid(request: Request, settings: SettingsDep, redis: RedisDep, keys: KeysDep) -> ORJSONResponse:
    """Score a draft bid without recording it: the same features and weights as a placed bid.

    Errors have the shape of ``POST /api/events``' (index, field, reason)."""
    body = parse_body(await read_body_capped(request, settings.api_max_body_bytes))
    if not isinstance(body, dict):
        raise HTTPException(422, [{"index": None, "field": "body", "reason": "a draft bid must be a JSON object"}])
    doc = {**body, "type": "bid", "bid_id": "draft"}
    try:
        bid = BidEvent.model_validate(doc)
    except ValidationError as exc:
        raise HTTPException(422, [{"index": None, **err} for err in validation_errors(exc)]) from None
    now = bid.ts or time.time()
    snapshot = await _snapshot(redis, keys)
    profile_raw = await read_model(redis.get(keys.bid_profile(bid.profile_id)))
    job_raw = await read_model(redis.get(keys.bid_job(bid.job_id))) if bid.job_id else None
    profile = ProfileHistory.from_state(orjson.loads(profile_raw)) if profile_raw else ProfileHistory()
    job = JobStats(**orjson.loads(job_raw)) if job_raw else JobStats()
    x = _featurizer.features(bid.model_dump(mode="json", exclude_none=True), now, profile, job,
                             skills=set(snapshot["skills"]))
    p = WinModel.score_with(snapshot, x)
    weights = snapshot["weights"]
    contributions = sorted(((name, weights.get(name, 0.0) * v) for name, v in x.items()), key=lambda kv: -abs(kv[1]))
    return ORJSONResponse({
        "probability": p,
        "baseline": profile.win_rate(now)[1],
        "model_version": f"v{snapshot['version']}.{snapshot['learned']}",
        "top_contributions": [{"feature": n, "contribution": round(c, 4)} for n, c in contributions[:10] if c],
    })


@router.get("/models/bids")
async def get_bid_model_quality(redis: RedisDep, keys: KeysDep) -> ORJSONResponse:
    """Progressive validation of the bid model beside the profile-win-rate baseline, per worker."""
    raw = await read_model(redis.hgetall(keys.models))
    workers = {k.decode()[5:]: orjson.loads(v) for k, v in raw.items() if k.startswith(b"bids:")}
    return ORJSONResponse({
        "workers": workers,
        "learned": sum(w["learned"] for w in workers.values()),
        "pending": sum(w["pending"] for w in workers.values()),
        "expired": sum(w["expired"] for w in workers.values()),
    })
