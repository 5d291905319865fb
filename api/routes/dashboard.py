"""The dashboard's live figures in one read: events applied per topic, workers, consumer
lag, how fresh the read model is, and the latest alerts.

Rates (events/s) are left to the caller, from two successive reads of the cumulative
counts: the API keeps no history, so any number of API processes answer alike.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Depends

from api.deps import KeysDep, MonitorDep, RedisDep, SettingsDep, require_read_key
from api.responses import ORJSONResponse
from api.routes.reads import read_model

router = APIRouter(prefix="/api", tags=["dashboard"])


def _age(now: float, ts: Any) -> float | None:
    return round(max(0.0, now - ts), 3) if isinstance(ts, (int, float)) else None


def summarize(stats: dict[bytes, bytes], workers: dict[bytes, bytes], models: dict[bytes, bytes],
              popular: bytes | None, topic_prefix: str, now: float) -> dict[str, Any]:
    """The Redis half of the dashboard from the raw hashes the worker writes."""
    applied: dict[str, int] = {}
    for field, value in stats.items():
        name = field.decode()
        if name.startswith("applied:"):
            topic = name[len("applied:"):]
            applied[topic.removeprefix(topic_prefix)] = int(value)
    docs = {k.decode(): orjson.loads(v) for k, v in models.items()}
    # The recommender publishes its figures with every batch it learns from, the bid model
    # at most once a second: "seconds since" is how far behind the stream each one is at
    # worst (when events keep coming) or how long the stream has been idle.
    learned = {
        name: [_age(now, d.get("updated_at")) for k, d in docs.items() if k.startswith(f"{name}:")]
        for name in ("recs", "bids")
    }
    popular_doc = orjson.loads(popular) if popular else {}
    return {
        "now": now,
        "applied": dict(sorted(applied.items())),
        "workers": sorted(
            ({"worker": k.decode(), **orjson.loads(v)} for k, v in workers.items()), key=lambda w: w["worker"]
        ),
        "freshness": {
            "recommender_s": min((a for a in learned["recs"] if a is not None), default=None),
            "bids_s": min((a for a in learned["bids"] if a is not None), default=None),
            # The cold-start list is the recommender's, rewritten by the batches it learns from
            # when it changes: as fresh as the recommender once it exists.
            "popular_s": min((a for a in learned["recs"] if a is not None), default=None) if popular_doc else None,
        },
    }


@router.get("/dashboard", dependencies=[Depends(require_read_key)])
async def get_dashboard(redis: RedisDep, keys: KeysDep, settings: SettingsDep, monitor: MonitorDep) -> ORJSONResponse:
    """Events applied per topic (cumulative), workers, consumer lag, read-model freshness, latest alerts."""
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(keys.stats)
    pipe.hgetall(keys.workers)
    pipe.hgetall(keys.models)
    pipe.get(keys.popular_list)
    stats, workers, models, popular = await read_model(pipe.execute())
    doc = summarize(stats, workers, models, popular, settings.topic_prefix, time.time())
    doc["lag"] = await monitor.lag()
    doc["alerts"] = await monitor.alerts()
    return ORJSONResponse(doc)
