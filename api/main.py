"""The FastAPI application: reads the Redis read model, forwards producer events to Kafka."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import ORJSONResponse
from limits import parse as parse_limit

from api.deps import rate_limit
from api.metrics import REQUEST_SECONDS
from api.monitor import KafkaMonitor
from api.producer import EventProducer
from api.routes import bids, dashboard, events, health, models, reads, recommendations, scraping, ui
from api.stale import LastGood
from schemas.keys import Keys
from schemas.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = aioredis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        app.state.producer = EventProducer(settings)
        await app.state.producer.start()
        app.state.monitor = KafkaMonitor(settings)
        yield
        await app.state.monitor.close()
        await app.state.producer.stop()
        await app.state.redis.aclose()

    app = FastAPI(
        title="Eddy",
        summary="A real-time recommender that learns from every event.",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
    )
    app.state.settings = settings
    app.state.keys = Keys(settings.redis_prefix)
    app.state.last_good = LastGood(settings.api_stale_entries)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type"],
        )

    @app.middleware("http")
    async def time_requests(request: Request, call_next):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        REQUEST_SECONDS.labels(getattr(route, "path", "unmatched"), response.status_code).observe(
            time.perf_counter() - start
        )
        return response

    @app.exception_handler(RequestValidationError)
    async def readable_422(request: Request, exc: RequestValidationError) -> ORJSONResponse:
        detail = [
            {"field": ".".join(str(p) for p in err["loc"][1:]) or str(err["loc"][0]), "reason": err["msg"]}
            for err in exc.errors()
        ]
        return ORJSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> ORJSONResponse:
        return ORJSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    app.state.rate_limit = parse_limit(settings.rate_limit) if settings.rate_limit else None
    app.include_router(health.router)
    ui.mount_web_app(app)
    limited = [Depends(rate_limit)]
    for module in (events, reads, recommendations, scraping, bids, models, dashboard):
        app.include_router(module.router, dependencies=limited)
    return app
