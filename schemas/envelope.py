"""Envelopes: many events of one partition in one Kafka record.

Faust pays a fixed cost per record, far above what validating and applying one event
costs, so the API writes each POSTed batch as one record per target partition:
``{"envelope": [event, event, ...]}``. Each event inside keeps its own key's partition
(the same murmur2 partitioner Kafka's clients use), its order, and is still validated,
dead-lettered and deduplicated on its own. Producers writing to Kafka directly may send
plain one-event records; the worker reads both.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka.partitioner import DefaultPartitioner

from schemas.events import Event, EventDecodeError, validate_event
from schemas.topics import key_of

ENVELOPE_FIELD = "envelope"
#: Kafka's default max.message.bytes is 1 MiB; stay well under it.
MAX_ENVELOPE_BYTES = 900_000
MAX_ENVELOPE_EVENTS = 1_000

_partitioner = DefaultPartitioner()


def partition_of(key: bytes, partitions: Sequence[int]) -> int:
    """The partition Kafka's default partitioner picks for ``key``."""
    return _partitioner(key, list(partitions), list(partitions))


def pack(
    encoded: Sequence[tuple[bytes | None, bytes]], partitions: Sequence[int]
) -> list[tuple[int, bytes]]:
    """(key, event JSON) pairs of one topic -> (partition, envelope record) pairs, in order."""
    groups: dict[int, list[bytes]] = defaultdict(list)
    for key, value in encoded:
        p = partition_of(key, partitions) if key is not None else partitions[0]
        groups[p].append(value)
    records = []
    for p, values in groups.items():
        chunk: list[bytes] = []
        size = 0
        for value in values:
            if chunk and (size + len(value) > MAX_ENVELOPE_BYTES or len(chunk) >= MAX_ENVELOPE_EVENTS):
                records.append((p, _envelope(chunk)))
                chunk, size = [], 0
            chunk.append(value)
            size += len(value) + 1
        records.append((p, _envelope(chunk)))
    return records


def _envelope(values: list[bytes]) -> bytes:
    return b'{"' + ENVELOPE_FIELD.encode() + b'":[' + b",".join(values) + b"]}"


def decode_record(
    raw: bytes | None, *, max_bytes: int
) -> tuple[list[Event | EventDecodeError], bool]:
    """A Kafka record -> (its events, whether it was an envelope), each validated alone.

    A record that cannot be read at all yields one EventDecodeError; inside an envelope,
    a bad event yields an EventDecodeError in its place (carrying that event's own bytes
    in ``raw``) and the others are unaffected.
    """
    if raw is None:
        return [EventDecodeError("empty record (no value)")], False
    try:
        obj: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if len(raw) > max_bytes:
            return [EventDecodeError(f"event is {len(raw)} bytes, over the limit of {max_bytes}")], False
        return [EventDecodeError(f"not valid JSON: {exc}")], False
    if isinstance(obj, dict) and ENVELOPE_FIELD in obj and "type" not in obj:
        inner = obj[ENVELOPE_FIELD]
        if not isinstance(inner, list):
            return [EventDecodeError("an envelope must hold a JSON array of events")], False
        large = len(raw) > max_bytes
        # Events are numbered by offset and index (streams/recommend.py): no more per record.
        out = [_validate_inner(doc, max_bytes if large else None) for doc in inner[:MAX_ENVELOPE_EVENTS]]
        for doc in inner[MAX_ENVELOPE_EVENTS:]:
            error = EventDecodeError(f"an envelope holds at most {MAX_ENVELOPE_EVENTS} events")
            error.raw = orjson.dumps(doc)
            out.append(error)
        return out, True
    if len(raw) > max_bytes:
        return [EventDecodeError(f"event is {len(raw)} bytes, over the limit of {max_bytes}")], False
    try:
        return [validate_event(obj)], False
    except EventDecodeError as exc:
        return [exc], False


def _validate_inner(doc: Any, max_bytes: int | None) -> Event | EventDecodeError:
    error: EventDecodeError
    if max_bytes is not None and len(orjson.dumps(doc)) > max_bytes:
        error = EventDecodeError(f"event is {len(orjson.dumps(doc))} bytes, over the limit of {max_bytes}")
    else:
        try:
            return validate_event(doc)
        except EventDecodeError as exc:
            error = exc
    error.raw = orjson.dumps(doc)
    return error


__all__ = ["ENVELOPE_FIELD", "decode_record", "key_of", "pack", "partition_of"]
