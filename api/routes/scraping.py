"""Scraping: each domain's strategy and why, analytics over every domain, operator pins."""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from ulid_transform import ulid_now

from api.deps import KeysDep, ProducerDep, RedisDep, SettingsDep, require_admin_key, require_read_key
from api.producer import ProducerUnavailable
from api.responses import ORJSONResponse
from api.routes.reads import read_model
from schemas.events import StrategyPinEvent

router = APIRouter(prefix="/api", tags=["scraping"])

LabelPath = Annotated[str, Path(min_length=1, max_length=200)]
DAY_S = 86400.0


async def _strategy_doc(redis: Any, key: str, domain: str) -> dict[str, Any]:
    doc = await read_model(redis.get(key))
    if doc is None:
        raise HTTPException(404, f"no scrape attempts seen for domain {domain!r}")
    return orjson.loads(doc)


@router.get("/strategies/{domain}", dependencies=[Depends(require_read_key)])
async def get_strategy(domain: LabelPath, redis: RedisDep, keys: KeysDep) -> ORJSONResponse:
    """A domain's current strategy, why it was chosen, its switches and every strategy's statistics."""
    return ORJSONResponse(await _strategy_doc(redis, keys.strategy(domain), domain))


@router.get("/strategies/{domain}/stats", dependencies=[Depends(require_read_key)])
async def get_strategy_stats(domain: LabelPath, redis: RedisDep, keys: KeysDep) -> ORJSONResponse:
    """Only the per-strategy statistics of a domain (attempts, rates, errors, latency, trend)."""
    doc = await _strategy_doc(redis, keys.strategy(domain), domain)
    return ORJSONResponse({"domain": domain, "strategies": doc["strategies"]})


def _rate(successes: int, attempts: int) -> float | None:
    return successes / attempts if attempts else None


def analytics(summaries: dict[str, dict[str, Any]], window_s: float = DAY_S) -> dict[str, Any]:
    """Success rates by strategy and by domain, error patterns, trends and recent switches."""
    now = max((s.get("updated_at") or 0.0 for s in summaries.values()), default=0.0)
    by_strategy: dict[str, dict[str, Any]] = {}
    by_domain: dict[str, dict[str, Any]] = {}
    errors: dict[str, int] = {}
    errors_by_strategy: dict[str, dict[str, int]] = {}
    switches = []
    for domain, s in sorted(summaries.items()):
        d_att = d_ok = 0
        for name, st in s["strategies"].items():
            agg = by_strategy.setdefault(name, {"attempts": 0, "successes": 0, "day_attempts": 0, "day_successes": 0,
                                                "domains_in_use": 0, "tripped_on": 0})
            agg["attempts"] += st["attempts"]
            agg["successes"] += st["successes"]
            day = st["last_day"]
            agg["day_attempts"] += day["attempts"]
            agg["day_successes"] += round((day["success_rate"] or 0.0) * day["attempts"])
            agg["domains_in_use"] += s["current"] == name
            agg["tripped_on"] += bool(st["tripped"])
            d_att, d_ok = d_att + st["attempts"], d_ok + st["successes"]
            for error, n in st["errors"].items():
                errors[error] = errors.get(error, 0) + n
                per = errors_by_strategy.setdefault(name, {})
                per[error] = per.get(error, 0) + n
        current = s["strategies"].get(s["current"] or "", {})
        by_domain[domain] = {
            "current": s["current"],
            "pinned": s["pinned"],
            "no_working_strategy": s["no_working_strategy"],
            "success_rate": _rate(d_ok, d_att),
            "current_recent_success_rate": current.get("recent_success_rate"),
            "trend": current.get("trend"),
            "attempts": d_att,
        }
        for ts, old, new, trigger, decision_id in s["switches"]:
            if ts >= now - window_s:
                switches.append({"domain": domain, "ts": ts, "from": old, "to": new, "trigger": trigger,
                                 "decision_id": decision_id})
    for agg in by_strategy.values():
        agg["success_rate"] = _rate(agg["successes"], agg["attempts"])
        agg["last_day_success_rate"] = _rate(agg.pop("day_successes"), agg["day_attempts"])
    switches.sort(key=lambda sw: sw["ts"], reverse=True)
    falling = sorted((d for d, v in by_domain.items() if (v["trend"] or 0.0) < -0.1),
                     key=lambda d: by_domain[d]["trend"])
    return {
        "domains": len(summaries),
        "as_of": now or None,
        "by_strategy": dict(sorted(by_strategy.items())),
        "by_domain": by_domain,
        "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])),
        "errors_by_strategy": errors_by_strategy,
        "falling": falling,
        "no_working_strategy": sorted(d for d, v in by_domain.items() if v["no_working_strategy"]),
        "switches_last_day": switches,
    }


@router.get("/scraping/analytics", dependencies=[Depends(require_read_key)])
async def get_scraping_analytics(redis: RedisDep, keys: KeysDep) -> ORJSONResponse:
    """Success rate by strategy and by domain, error patterns, falling trends, switches in the last day."""
    raw = await read_model(redis.hgetall(keys.scraping))
    summaries = {k.decode(): orjson.loads(v) for k, v in raw.items()}
    return ORJSONResponse(analytics(summaries))


@router.get("/scraping/sources", dependencies=[Depends(require_read_key)])
async def get_source_reliability(
    redis: RedisDep, keys: KeysDep, below: Annotated[float, Query(ge=0, le=1)] = 1.0
) -> ORJSONResponse:
    """Every source's reliability (success rate, anomalies), optionally only those below a score."""
    raw = await read_model(redis.hgetall(keys.sources))
    docs = [orjson.loads(v) for v in raw.values()]
    docs = sorted((d for d in docs if d["reliability"] <= below), key=lambda d: (d["reliability"], d["source"]))
    return ORJSONResponse({"sources": docs})


class PinRequest(BaseModel):
    """Hold a domain on one strategy until unpinned."""

    model_config = ConfigDict(extra="forbid")

    strategy: str = Field(min_length=1, max_length=200)
    reason: str | None = Field(None, max_length=1000)
    by: str | None = Field(None, min_length=1, max_length=200)


async def _send_pin(producer: Any, event: StrategyPinEvent) -> None:
    try:
        await producer.send_events([event])
    except ProducerUnavailable as exc:
        raise HTTPException(503, f"Kafka unavailable, nothing accepted: {exc}", headers={"Retry-After": "5"}) from exc


@router.post("/strategies/{domain}/pin", status_code=202, dependencies=[Depends(require_admin_key)])
async def pin_strategy(domain: LabelPath, body: PinRequest, producer: ProducerDep, redis: RedisDep, keys: KeysDep,
                       settings: SettingsDep) -> ORJSONResponse:
    """Pin a domain to a strategy (admin): scrapers are switched to it and automation pauses.

    The strategy must be one Eddy knows: configured (``EDDY_SCRAPE_STRATEGIES``) or seen in
    some domain's attempts; a misspelt one is a 422, not a strategy added for good."""
    raw = await read_model(redis.hgetall(keys.scraping))
    known = set(settings.scrape_strategies)
    for doc in raw.values():
        known.update(orjson.loads(doc).get("strategies", {}))
    if body.strategy not in known:
        reason = f"unknown strategy {body.strategy!r}; known: {', '.join(sorted(known)) or 'none yet'}"
        raise HTTPException(422, [{"field": "strategy", "reason": reason}])
    event = StrategyPinEvent(type="strategy_pin", event_id=ulid_now(), ts=time.time(), domain=domain,
                             strategy=body.strategy, by=body.by or "admin", reason=body.reason)
    await _send_pin(producer, event)
    return ORJSONResponse({"domain": domain, "pinned": body.strategy, "event_id": event.event_id}, 202)


@router.delete("/strategies/{domain}/pin", status_code=202, dependencies=[Depends(require_admin_key)])
async def unpin_strategy(domain: LabelPath, producer: ProducerDep) -> ORJSONResponse:
    """Unpin a domain (admin): the automation decides again."""
    event = StrategyPinEvent(type="strategy_pin", event_id=ulid_now(), ts=time.time(), domain=domain,
                             strategy=None, by="admin")
    await _send_pin(producer, event)
    return ORJSONResponse({"domain": domain, "pinned": None, "event_id": event.event_id}, 202)
