"""The FastAPI application: reads the Redis read model, forwards producer events to Kafka."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from limits import parse as parse_limit
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import REQUEST_SECONDS
from api.monitor import KafkaMonitor
from api.producer import EventProducer
from api.read_cache import ReadCache
from api.responses import ORJSONResponse
from api.routes import (
    bids,
    dashboard,
    events,
    health,
    models,
    reads,
    recommendations,
    scraping,
    ui,
)
from deploy.runtime import serve_first, tune_gc
from schemas.keys import Keys
from schemas.settings import Settings, get_settings

log = logging.getLogger(__name__)


class RequestTimer:
    """Times every request per route template and status (a plain ASGI middleware: the
    ``@app.middleware("http")`` kind runs each request through a task and memory streams,
    which cost more than a read of the read model itself)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._series: dict[tuple[str, int], Any] = {}  # labelled once: labels() takes a lock and builds tuples

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            labels = (getattr(scope.get("route"), "path", "unmatched"), status)
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = REQUEST_SECONDS.labels(*labels)
            series.observe(time.perf_counter() - start)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tune_gc()  # in each uvicorn worker process: requests allocate much, and make few cycles
        if settings.api_realtime_priority:
            serve_first(settings.api_realtime_priority)  # this event loop's thread, in each worker process
        app.state.redis = aioredis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        app.state.producer = EventProducer(settings)
        await app.state.producer.start()
        app.state.monitor = KafkaMonitor(settings)
        follow = asyncio.create_task(app.state.read_cache.follow(app.state.redis))
        yield
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
        await app.state.monitor.close()
        await app.state.producer.stop()
        await app.state.redis.aclose()

    app = FastAPI(
        title="Eddy",
        summary="A real-time recommender that learns from every event.",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        docs_url=None,  # served by api/routes/ui.py from installed files, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings

    def openapi() -> dict[str, Any]:
        """FastAPI's schema, with the event types POST /api/events takes in its components."""
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(events.EVENT_SCHEMAS)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.keys = Keys(settings.redis_prefix)
    # The hot documents: users' lists and the cold-start list.
    app.state.read_cache = ReadCache(settings.api_cache_entries, [app.state.keys.recs(""), app.state.keys.popular_list],
                                     tracking=settings.api_cache_tracking)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type"],
        )

    app.add_middleware(RequestTimer)

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
    # No read key, no user tokens, no rate limit: a read has nothing to check.
    app.state.open_reads = (settings.read_api_key is None and settings.user_token_secret is None
                            and app.state.rate_limit is None)
    # The hottest route first: routes are matched in order.
    route = recommendations.SERVING_ROUTE
    app.add_api_route(route["path"], recommendations.get_recommendations, **{k: v for k, v in route.items() if k != "path"})
    app.include_router(health.router)
    ui.mount_web_app(app)
    # Each route's access check (api/deps.py) also applies the rate limit.
    for module in (recommendations, events, reads, scraping, bids, models, dashboard):
        app.include_router(module.router)
    return app
