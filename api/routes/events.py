"""POST /api/events: the one door producers use to put events into Kafka."""

from __future__ import annotations

import time
from typing import Annotated, Any, Union

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field, TypeAdapter
from ulid_transform import ulid_now

from api.deps import ProducerDep, SettingsDep, require_producer_key
from api.metrics import EVENTS_ACCEPTED, EVENTS_REJECTED
from api.producer import ProducerUnavailable
from api.responses import ORJSONResponse
from schemas.events import (
    INBOUND_TYPES,
    BidEvent,
    BidOutcomeEvent,
    EventDecodeError,
    InteractionEvent,
    ItemEvent,
    PreferenceEvent,
    ScrapeAttemptEvent,
    UserDeletedEvent,
    too_far_ahead,
    validate_event,
)

router = APIRouter(prefix="/api", tags=["events"])


class Accepted(BaseModel):
    accepted: int
    event_ids: list[str]


async def read_body_capped(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


#: Deepest nesting of objects and arrays an event may hold. orjson reads 1,024 levels but
#: writes only 254, so a deeper event could not even be produced; no real event needs 64.
MAX_DEPTH = 64


def too_deep(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """The top-level field of the first object or array nested deeper than ``limit`` levels
    (``body`` for the document itself), or None.

    >>> too_deep({"type": "bid", "profile": {"skills": ["a"]}}) is None
    True
    >>> nested: Any = 1
    >>> for _ in range(100):
    ...     nested = [nested]
    >>> too_deep({"type": "bid", "profile": {"x": nested}})
    'profile'
    """
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        node, field, depth = stack.pop()
        if depth > limit:
            return field or "body"
        children = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, field or str(key), depth + 1))
    return None


def parse_body(body: bytes, *, check_depth: bool = True) -> Any:
    """A request body -> its JSON value, or a 422 in the events' error shape: not JSON, or
    (with ``check_depth``) nested deeper than :data:`MAX_DEPTH`, naming the top-level field."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(422, [{"index": None, "field": "body", "reason": f"not valid JSON: {exc}"}]) from None
    if check_depth and isinstance(payload, (dict, list)) and (field := too_deep(payload)) is not None:
        raise HTTPException(422, [{"index": None, "field": field, "reason": f"nested deeper than {MAX_DEPTH} levels"}])
    return payload


#: The event contract of POST /api/events, published in OpenAPI: one event or an array of
#: them, each one of the inbound types, told apart by ``type`` (a discriminated union).
InboundEvent = Annotated[
    Union[ItemEvent, InteractionEvent, PreferenceEvent, UserDeletedEvent, ScrapeAttemptEvent, BidEvent,
          BidOutcomeEvent],
    Field(discriminator="type"),
]
_BODY_SCHEMA = TypeAdapter(Union[InboundEvent, list[InboundEvent]]).json_schema(
    ref_template="#/components/schemas/{model}")
#: The schemas the body's references point to, for the app's OpenAPI components (api/main.py).
EVENT_SCHEMAS: dict[str, Any] = _BODY_SCHEMA.pop("$defs", {})


@router.post(
    "/events",
    status_code=202,
    response_model=Accepted,
    dependencies=[Depends(require_producer_key)],
    responses={
        401: {"description": "Missing or wrong X-API-Key"},
        413: {"description": "Body or batch over the limit"},
        422: {"description": "At least one event is invalid; nothing was produced"},
        503: {"description": "Kafka unavailable; nothing was accepted"},
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _BODY_SCHEMA}}}},
)
async def post_events(request: Request, settings: SettingsDep, producer: ProducerDep) -> Any:
    """Validate one event or a JSON array of events and produce them to Kafka, all or none."""
    body = await read_body_capped(request, settings.api_max_body_bytes)
    try:
        payload = parse_body(body, check_depth=False)  # depth is checked per event below, naming its index
    except HTTPException:
        EVENTS_REJECTED.labels("malformed").inc()
        raise
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise HTTPException(422, [{"index": None, "field": "body", "reason": "empty batch"}])
    if len(items) > settings.api_max_batch:
        raise HTTPException(
            413, f"batch of {len(items)} events exceeds the limit of {settings.api_max_batch}"
        )
    events, errors = [], []
    received = time.time()
    for index, obj in enumerate(items):
        if isinstance(obj, (dict, list)) and (field := too_deep(obj)) is not None:
            errors.append({"index": index, "field": field, "reason": f"nested deeper than {MAX_DEPTH} levels"})
            EVENTS_REJECTED.labels("malformed").inc()
            continue
        try:
            event = validate_event(obj, allowed=INBOUND_TYPES)
        except EventDecodeError as exc:
            errors.extend({"index": index, **err} for err in exc.errors)
            kind = obj.get("type") if isinstance(obj, dict) else None
            # Only known types become labels: one per type a client makes up would grow
            # the metrics (and the process) without bound.
            EVENTS_REJECTED.labels(kind if isinstance(kind, str) and kind in INBOUND_TYPES else "?").inc()
            continue
        if (ahead := too_far_ahead(event.ts, received, settings.max_clock_skew_s)) is not None:
            errors.extend({"index": index, **err} for err in ahead.errors)
            EVENTS_REJECTED.labels(event.type).inc()
            continue
        if len(orjson.dumps(obj)) > settings.max_event_bytes:
            errors.append(
                {"index": index, "field": "", "reason": f"event over the limit of {settings.max_event_bytes} bytes"}
            )
            continue
        events.append(event)
    if errors:
        raise HTTPException(422, errors)
    now = time.time()
    for event in events:
        if event.event_id is None:
            event.event_id = ulid_now()
        if event.ts is None:
            event.ts = now
    try:
        await producer.send_events(events)
    except ProducerUnavailable as exc:
        raise HTTPException(503, f"Kafka unavailable, nothing accepted: {exc}", headers={"Retry-After": "5"}) from exc
    for event in events:
        EVENTS_ACCEPTED.labels(event.type).inc()
    return ORJSONResponse({"accepted": len(events), "event_ids": [e.event_id for e in events]}, 202)
