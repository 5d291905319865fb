"""The event contracts every part of Eddy shares.

One pydantic model per event type, discriminated by ``type``. Unknown fields are kept
(``extra="allow"``) so producers can add data without breaking consumers; wrong types are
rejected (strict mode: ``"5"`` is not a number and ``1`` is not a boolean). Identifiers
may be given as strings or integers and are always stored as strings, because public data
sets number their users and items.

``ts`` is event time in seconds since the epoch; ISO-8601 strings are accepted and
converted. ``event_id`` and ``ts`` may be absent on the way in: the API fills them, and the
worker derives them from the Kafka record when a producer wrote to Kafka directly.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

__all__ = [
    "Event",
    "EventDecodeError",
    "INBOUND_TYPES",
    "decode_event",
    "encode_event",
    "event_adapter",
    "validation_errors",
]

MAX_ID_LENGTH = 200
ID_PATTERN = r"^[A-Za-z0-9_.:@+\-=~#$!*]+$"


def _id_from_int(value: Any) -> Any:
    # Integers are a legitimate spelling of an id (MovieLens, Netflix); booleans are not.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _timestamp(value: Any) -> Any:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError("must be seconds since the epoch or an ISO-8601 time") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return float(value)
    return value


# Constraints before the validator: pydantic then checks them in its core, after the
# validator has run; the other way round it checks each in Python (a third of decoding).
Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN),
    BeforeValidator(_id_from_int),
]
Timestamp = Annotated[float, Field(ge=0, le=32503680000), BeforeValidator(_timestamp)]
ShortText = Annotated[str, StringConstraints(max_length=1_000)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=200)]
LongText = Annotated[str, StringConstraints(max_length=50_000)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class EventBase(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=False)

    event_id: Id | None = None
    ts: Timestamp | None = None


class ItemEvent(EventBase):
    """A scraped or published item: an art opportunity, a job, a movie, an article."""

    type: Literal["item"]
    item_id: Id
    title: ShortText | None = None
    url: Annotated[str, StringConstraints(max_length=2_000)] | None = None
    source: Label | None = None
    domain: Label | None = None
    category: Label | None = None
    tags: Annotated[list[Label], Field(max_length=100)] = []
    text: LongText | None = None
    deadline: Timestamp | None = None
    retracted: bool = False
    attributes: dict[str, Any] = {}


Action = Literal["impression", "click", "view", "like", "dislike", "rate", "save", "hide"]


class InteractionEvent(EventBase):
    """A user acting on an item. ``rate`` needs a ``value``; ratings are on a 0-10 scale at most."""

    type: Literal["interaction"]
    user_id: Id
    item_id: Id
    action: Action
    value: FiniteFloat | None = Field(None, validate_default=True)
    rec_id: Id | None = None
    position: Annotated[int, Field(ge=0, le=10_000)] | None = None

    @field_validator("value")
    @classmethod
    def _rating_has_value(cls, value: float | None, info: ValidationInfo) -> float | None:
        if info.data.get("action") == "rate":
            if value is None:
                raise ValueError("a 'rate' interaction needs a numeric value")
            if not 0 <= value <= 10:
                raise ValueError("a rating must be between 0 and 10")
        return value


class PreferenceEvent(EventBase):
    """Interests a user declared (onboarding): category or tag -> weight in [-1, 1]."""

    type: Literal["preference"]
    user_id: Id
    interests: Annotated[dict[Label, Annotated[float, Field(ge=-1, le=1)]], Field(max_length=200)]


class UserDeletedEvent(EventBase):
    """'Forget me': every trace of the user must go."""

    type: Literal["user_deleted"]
    user_id: Id


class ScrapeAttemptEvent(EventBase):
    """One attempt of a scraper to fetch a domain with a strategy.

    Unlike other events, unknown fields are rejected: attempts come from Eddy's own
    scraper client, and a misspelt field (``sucess``, ``latency``) would otherwise be
    dropped silently and skew the success rates that switch strategies.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["scrape_attempt"]
    domain: Label
    strategy: Label
    success: bool
    latency_ms: Annotated[float, Field(ge=0, le=86_400_000, allow_inf_nan=False)] | None = None
    error_type: Label | None = None
    http_status: Annotated[int, Field(ge=100, le=599)] | None = None
    items_found: Annotated[int, Field(ge=0)] | None = None
    scraper_id: Label | None = None


class BidProfile(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    skills: Annotated[list[Label], Field(max_length=200)] = []
    experience: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None


class BidEvent(EventBase):
    """A bid a freelancer placed on a job."""

    type: Literal["bid"]
    bid_id: Id
    profile_id: Id
    job_id: Id | None = None
    job_title: ShortText | None = None
    job_text: LongText | None = None
    job_budget: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    job_posted_at: Timestamp | None = None
    bid_text: LongText | None = None
    amount: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    profile: BidProfile = BidProfile()


class BidOutcomeEvent(EventBase):
    """The outcome of a bid, days after it was placed."""

    type: Literal["bid_outcome"]
    bid_id: Id
    won: bool


class StrategySwitchEvent(EventBase):
    """Out: a domain's scrapers should move to another strategy."""

    type: Literal["strategy_switch"]
    domain: Label
    from_strategy: Label | None = None
    to_strategy: Label
    reason: ShortText
    params: dict[str, Any] = {}
    decision_id: Id


class StrategyPinEvent(EventBase):
    """An operator holds a domain on one strategy (``strategy``), or lets go (``null``)."""

    type: Literal["strategy_pin"]
    domain: Label
    strategy: Label | None = None
    by: Label | None = None
    reason: ShortText | None = None


class AlertEvent(EventBase):
    """Out: something a person should look at."""

    type: Literal["alert"]
    kind: Label
    subject: Label
    detail: LongText = ""
    severity: Literal["info", "warning", "critical"] = "warning"


class RescrapeRequestEvent(EventBase):
    """Out: what was scraped from a source no longer looks right; scrape it again."""

    type: Literal["rescrape_request"]
    source: Label | None = None
    domain: Label | None = None
    reason: ShortText


Event = Annotated[
    Union[
        ItemEvent,
        InteractionEvent,
        PreferenceEvent,
        UserDeletedEvent,
        ScrapeAttemptEvent,
        BidEvent,
        BidOutcomeEvent,
        StrategySwitchEvent,
        StrategyPinEvent,
        AlertEvent,
        RescrapeRequestEvent,
    ],
    Field(discriminator="type"),
]

event_adapter: TypeAdapter[Event] = TypeAdapter(Event)

#: Types producers may send through POST /api/events; the rest only Eddy emits.
INBOUND_TYPES = frozenset(
    {"item", "interaction", "preference", "user_deleted", "scrape_attempt", "bid", "bid_outcome"}
)
ALL_TYPES = frozenset(
    INBOUND_TYPES | {"strategy_switch", "strategy_pin", "alert", "rescrape_request"}
)


class EventDecodeError(ValueError):
    """Raised when bytes are not a valid event; ``reason`` says why in one line."""

    def __init__(self, reason: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errors = errors or [{"field": "", "reason": reason}]
        self.raw: bytes | None = None  # the offending event's own bytes, when known


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as ``{"field": "a.b", "reason": "..."}``, without the union tag."""
    out = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] in ALL_TYPES:  # the discriminator tag pydantic prepends
            loc = loc[1:]
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append({"field": ".".join(loc), "reason": msg})
    return out


def validate_event(obj: Any, *, allowed: frozenset[str] = ALL_TYPES) -> Event:
    """Validate a decoded JSON value as an event, or raise EventDecodeError."""
    if not isinstance(obj, dict):
        raise EventDecodeError(f"an event must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if kind is None:
        raise EventDecodeError("missing field 'type'", [{"field": "type", "reason": "Field required"}])
    if not isinstance(kind, str) or kind not in allowed:
        reason = f"unknown event type {kind!r}; expected one of {', '.join(sorted(allowed))}"
        raise EventDecodeError(reason, [{"field": "type", "reason": reason}])
    try:
        return event_adapter.validate_python(obj)
    except ValidationError as exc:
        errors = validation_errors(exc)
        reason = "; ".join(f"{e['field'] or 'event'}: {e['reason']}" for e in errors)
        raise EventDecodeError(reason, errors) from None


def too_far_ahead(ts: float | None, clock: float, skew_s: float) -> EventDecodeError | None:
    """The error for an event time more than ``skew_s`` ahead of the receiving ``clock``
    (None when it is not): one event from the future would move every model's event-time
    clock there, and expire or decay everything else.

    >>> too_far_ahead(32503679999.0, 1_700_000_000.0, 300.0).errors[0]["field"]
    'ts'
    >>> too_far_ahead(1_700_000_100.0, 1_700_000_000.0, 300.0) is None
    True
    """
    if ts is None or ts <= clock + skew_s:
        return None
    reason = (f"ts {ts:.0f} is {ts - clock:,.0f} s ahead of the receiving clock ({clock:.0f}); "
              f"at most {skew_s:g} s ahead is accepted (EDDY_MAX_CLOCK_SKEW_S)")
    return EventDecodeError(reason, [{"field": "ts", "reason": reason}])


def decode_event(raw: bytes | None, *, max_bytes: int | None = None) -> Event:
    """Bytes from Kafka or HTTP -> a validated event, or EventDecodeError with the reason."""
    if raw is None:
        raise EventDecodeError("empty record (no value)")
    if max_bytes is not None and len(raw) > max_bytes:
        raise EventDecodeError(f"event is {len(raw)} bytes, over the limit of {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventDecodeError(f"not valid JSON: {exc}") from None
    return validate_event(obj)


def encode_event(event: BaseModel) -> bytes:
    """An event -> compact JSON bytes, unknown fields included, absent optionals left out."""
    return orjson.dumps(event.model_dump(mode="json", exclude_none=True))
