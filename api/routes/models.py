"""The model registry: every model, its versions and figures, which one serves; promote
and roll back without a restart.

Workers publish their versions to the ``registry`` hash (one field per model and worker)
and follow the ``serving`` hash, which these endpoints write; a switch is visible here once
the workers have made it (usually within a second).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path

from api.deps import KeysDep, RedisDep, require_admin_key, require_read_key
from api.responses import ORJSONResponse
from api.routes.reads import read_model

router = APIRouter(prefix="/api", tags=["models"])

#: A worker that has not published for this long is taken to be gone.
STALE_S = 120.0
SWITCH_WAIT_S = 10.0
VERSIONED = ("recommender",)
ModelPath = Annotated[str, Path(pattern="^(recommender|bids|strategy)$", description="recommender, bids or strategy")]
VersionPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


def _merge_recommender(entries: list[dict[str, Any]], serving: dict[str, Any] | None) -> dict[str, Any]:
    """One view of the recommender over its workers: counters summed per version."""
    live = [e for e in entries if not e.get("replay")]
    newest = max(live, key=lambda e: e["updated_at"], default=None)
    versions: dict[str, dict[str, Any]] = {}
    for entry in entries:
        for v in entry["versions"]:
            acc = versions.setdefault(v["version"], {**v, "targets": 0, "hits": 0, "ndcg_sum": 0.0,
                                                     "window": {"targets": 0, "hits": 0}})
            for f in ("targets", "hits", "ndcg_sum"):
                acc[f] += v[f]
            for f in ("targets", "hits"):
                acc["window"][f] += v["window"][f]
    learning = {v["version"] for e in live for v in e["versions"]}  # built by a replay only: a candidate
    name = (newest or {}).get("serving")  # what the workers serve, not what was asked
    previous = (newest or {}).get("previous")
    out = []
    for v in versions.values():
        n = v["targets"]
        w = v["window"]
        out.append({
            **{k: v[k] for k in ("version", "variant", "origin", "params", "config_hash", "created_at")},
            "metrics": {
                "targets": n, "hr_at_10": v["hits"] / n if n else None, "ndcg_at_10": v["ndcg_sum"] / n if n else None,
                "window_targets": w["targets"], "window_hr_at_10": w["hits"] / w["targets"] if w["targets"] else None,
            },
            "serving": v["version"] == name,
            "role": "champion" if v["version"] == name else "previous" if v["version"] == previous else
            "challenger" if v["version"] in learning else "candidate",
        })
    baseline = {"targets": 0, "hits": 0}
    for entry in live:
        for f in baseline:
            baseline[f] += entry["baseline"][f]
    return {
        "name": "recommender", "serving": name, "previous": previous, "versions": out,
        "baseline": {"name": "popularity", "targets": baseline["targets"],
                     "hr_at_10": baseline["hits"] / baseline["targets"] if baseline["targets"] else None},
        "policy": (newest or {}).get("policy"),
        "requested": serving,
        "snapshots": [e["snapshot"] for e in live if e.get("snapshot")],
        "workers": len(live),
    }


async def _registry(redis: Any, keys: Any) -> dict[str, Any]:
    raw = await read_model(redis.hgetall(keys.registry))
    serving_raw = await read_model(redis.hgetall(keys.serving))
    serving = {k.decode(): orjson.loads(v) for k, v in serving_raw.items()}
    now = time.time()
    entries: dict[str, list[dict[str, Any]]] = {}
    for field, value in raw.items():
        name = field.decode().split(":", 1)[0]
        doc = orjson.loads(value)
        if doc.get("replay") or now - doc.get("updated_at", 0) < STALE_S:
            entries.setdefault(name, []).append(doc)
    if not entries.get("recommender") and raw:  # every worker stale: show the newest anyway
        docs = [orjson.loads(v) for k, v in raw.items() if k.startswith(b"recommender:")]
        entries["recommender"] = [max(docs, key=lambda d: d.get("updated_at", 0))] if docs else []
    models = []
    if entries.get("recommender"):
        models.append(_merge_recommender(entries["recommender"], serving.get("recommender")))
    models_raw = await read_model(redis.hgetall(keys.models))
    bids = [orjson.loads(v) for k, v in models_raw.items() if k.startswith(b"bids:")]
    if bids:
        newest = max(bids, key=lambda b: b["updated_at"])
        models.append({
            "name": "bids", "serving": "v1", "previous": None,
            "versions": [{"version": "v1", "variant": newest["model"], "origin": "config", "params": {},
                          "created_at": None, "serving": True, "role": "champion",
                          "metrics": {"learned": sum(b["learned"] for b in bids),
                                      "auc": newest["model_scores"].get("cumulative", {}).get("roc_auc")}}],
        })
    strategy = _strategy_entry(await read_model(redis.hgetall(keys.scraping)))
    if strategy is not None:
        models.append(strategy)
    return {"models": models}


def _strategy_entry(summaries: dict[bytes, bytes]) -> dict[str, Any] | None:
    """The self-healing scrapers' strategy selector: one per domain, its state in Redis
    (written with each batch's effects), so it has one version and no snapshot file."""
    if not summaries:
        return None
    domains = [orjson.loads(v) for v in summaries.values()]
    per_strategy = [s for d in domains for s in d["strategies"].values()]
    attempts = sum(s["attempts"] for s in per_strategy)
    successes = sum(s["successes"] for s in per_strategy)
    return {
        "name": "strategy", "serving": "v1", "previous": None, "state": "redis",
        "versions": [{
            "version": "v1", "variant": "DomainSelector", "origin": "config", "params": {}, "created_at": None,
            "serving": True, "role": "champion",
            "metrics": {
                "domains": len(domains), "attempts": attempts,
                "success_rate": successes / attempts if attempts else None,
                "domains_without_working_strategy": sum(bool(d["no_working_strategy"]) for d in domains),
                "recent_switches": sum(len(d["switches"]) for d in domains),
                "updated_at": max((d["updated_at"] or 0.0 for d in domains), default=None),
            },
        }],
    }


@router.get("/models", dependencies=[Depends(require_read_key)])
async def list_models(redis: RedisDep, keys: KeysDep) -> ORJSONResponse:
    """Every model with its versions, their online metrics, when each was created and which one serves."""
    return ORJSONResponse(await _registry(redis, keys))


async def _request(redis: Any, keys: Any, name: str, version: str, action: str) -> ORJSONResponse:
    request = {"version": version, "by": "admin", "action": action, "requested_at": time.time(),
               "detail": f"{action} to {version} asked through the API"}
    await read_model(redis.hset(keys.serving, name, orjson.dumps(request)))
    deadline = time.monotonic() + SWITCH_WAIT_S
    while time.monotonic() < deadline:
        model = next((m for m in (await _registry(redis, keys))["models"] if m["name"] == name), None)
        if model is not None and model["serving"] == version and all(
            v["serving"] == (v["version"] == version) for v in model["versions"]
        ):
            live = [e for e in await _entries(redis, keys, name) if not e.get("replay")]
            if live and all(e["serving"] == version for e in live):
                return ORJSONResponse({"model": name, "serving": version, "action": action, "applied": True})
        await asyncio.sleep(0.1)
    return ORJSONResponse({"model": name, "serving": version, "action": action, "applied": False,
                           "detail": "asked; the workers have not confirmed yet"}, 202)


async def _entries(redis: Any, keys: Any, name: str) -> list[dict[str, Any]]:
    raw = await read_model(redis.hgetall(keys.registry))
    now = time.time()
    docs = [orjson.loads(v) for k, v in raw.items() if k.decode().split(":", 1)[0] == name]
    return [d for d in docs if d.get("replay") or now - d.get("updated_at", 0) < STALE_S]


@router.post("/models/{name}/promote/{version}", dependencies=[Depends(require_admin_key)])
async def promote_version(name: ModelPath, version: VersionPath, redis: RedisDep, keys: KeysDep) -> ORJSONResponse:
    """Serve ``version`` of the model from now on (admin)."""
    if name not in VERSIONED:
        raise HTTPException(409, f"{name} has a single version; only {', '.join(VERSIONED)} can be promoted")
    model = next((m for m in (await _registry(redis, keys))["models"] if m["name"] == name), None)
    known = {v["version"] for v in model["versions"]} if model else set()
    if version not in known:
        raise HTTPException(404, f"unknown version {version!r} of {name}; known: {sorted(known)}")
    if model and model["serving"] == version:
        raise HTTPException(409, f"{version} already serves")
    return await _request(redis, keys, name, version, "promote")


@router.post("/models/{name}/rollback", dependencies=[Depends(require_admin_key)])
async def rollback_version(name: ModelPath, redis: RedisDep, keys: KeysDep) -> ORJSONResponse:
    """Serve the previous version again (admin)."""
    if name not in VERSIONED:
        raise HTTPException(409, f"{name} has a single version; nothing to roll back to")
    model = next((m for m in (await _registry(redis, keys))["models"] if m["name"] == name), None)
    if model is None or not model.get("previous"):
        raise HTTPException(409, f"{name} has no previous version to roll back to")
    return await _request(redis, keys, name, model["previous"], "rollback")
