"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ProducerDep, RedisDep
from api.producer import ProducerUnavailable
from api.responses import ORJSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def get_healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Kafka or Redis unreachable"}})
async def get_readyz(redis: RedisDep, producer: ProducerDep) -> ORJSONResponse:
    """Kafka and Redis are reachable; 503 names the one that is not."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(redis.ping(), 2.0)
        checks["redis"] = "ok"
    except Exception as exc:  # any failure means not ready; the reason is reported
        checks["redis"] = f"unreachable: {exc!r}"
    try:
        await producer.ping()
        checks["kafka"] = "ok"
    except ProducerUnavailable as exc:
        checks["kafka"] = f"unreachable: {exc}"
    ready = all(v == "ok" for v in checks.values())
    return ORJSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def get_metrics() -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
