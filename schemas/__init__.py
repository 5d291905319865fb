"""Contracts shared by every part of Eddy: events, topics, Redis keys and settings."""

from schemas.events import Event, EventDecodeError, decode_event, encode_event, validate_event
from schemas.keys import Keys
from schemas.settings import Settings, get_settings
from schemas.topics import CATALOGUE, TopicSpec, key_of, route

__all__ = [
    "CATALOGUE",
    "Event",
    "EventDecodeError",
    "Keys",
    "Settings",
    "TopicSpec",
    "decode_event",
    "encode_event",
    "get_settings",
    "key_of",
    "route",
    "validate_event",
]
