"""The event contracts as JSON Schema, for producers written in other languages.

``eddy schemas`` prints it; ``schemas/events.schema.json`` is the committed copy, and a
test fails when the two drift apart.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas.events import event_adapter

SCHEMA_FILE = Path(__file__).with_name("events.schema.json")


def event_json_schema() -> dict:
    schema = event_adapter.json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Eddy event"
    schema["description"] = (
        "One Eddy event, discriminated by 'type'. Unknown fields are kept. "
        "'ts' is event time in seconds since the epoch (an ISO-8601 string is also accepted); "
        "ids may be strings or integers."
    )
    return schema


def render_json_schema() -> str:
    return orjson.dumps(event_json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
