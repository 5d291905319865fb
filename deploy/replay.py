"""``eddy replay recommender``: rebuild the recommender from the Kafka log into a new version.

The catalogue (the items topic, always from its start) and the interactions from
``--from`` (earliest, a time, or explicit offsets) to the end of the log as it is now are
merged in the order the log received them (record time), each partition kept in its own
order — the order a live worker keeping up with the log learned them in — and taught test-then-train
through the worker's own service code (:class:`streams.recommend.RecommenderService`),
so the figures are computed on the same sample of targets as the live ones. Deletions are
honoured: a user deleted in the log contributes nothing from before the deletion, not even
to anonymous aggregates. The result is saved as a snapshot of a new version, with the
offsets it has learned up to, registered beside the live versions, and with ``--promote``
served: every worker loads it, catches it up from those offsets and switches to it.
"""

from __future__ import annotations

import asyncio
import heapq
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from deploy.runtime import tune_gc
from schemas.keys import Keys
from schemas.settings import Settings
from schemas.topics import INTERACTIONS, ITEMS
from streams.app import wheres_of
from streams.coalesce import Coalescer
from streams.pipeline import decode_batch
from streams.recommend import MODEL, RecommenderService, Version
from streams.replay import offsets_at, read_ranges
from streams.snapshots import SnapshotStore

_OFFSETS = re.compile(r"^\d+:\d+(,\d+:\d+)*$")


def parse_start(text: str) -> str | float | dict[int, int]:
    """``earliest``, explicit ``partition:offset,...``, epoch seconds or an ISO time.

    >>> parse_start("earliest"), parse_start("0:10,1:0"), parse_start("1700000000")
    ('earliest', {0: 10, 1: 0}, 1700000000.0)
    >>> parse_start("2026-11-22T10:00:00+00:00")
    1795341600.0
    """
    if text == "earliest":
        return text
    if _OFFSETS.match(text):
        return {int(p): int(o) for p, o in (part.split(":") for part in text.split(","))}
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"--from {text!r}: expected earliest, a time (epoch seconds or ISO 8601) "
                         "or offsets like 0:120,1:0") from None


async def _read(settings: Settings, topic: str, allowed: frozenset[str],
                ranges: dict[int, tuple[int, int | None]], ends: dict[int, int],
                on_records: Callable[[int], None]) -> dict[int, list[tuple[float, Any, str]]]:
    """partition -> [(record time, event, where)] in offset order."""
    out: dict[int, list[tuple[float, Any, str]]] = {p: [] for p in ranges}
    async for chunk in read_ranges(settings, topic, ranges, ends=ends):
        decoded = decode_batch(chunk, allowed_types=allowed, max_bytes=settings.max_event_bytes,
                               max_skew_s=settings.max_clock_skew_s)
        for (event, rec), where in zip(decoded.events, wheres_of(decoded.events), strict=True):
            out[rec.partition].append((rec.timestamp, event, where))
        on_records(len(chunk))
    return out


async def replay_recommender(
    settings: Settings,
    *,
    start: str = "earliest",
    params: dict[str, float] | None = None,
    name: str | None = None,
    promote: bool = False,
    on_records: Callable[[int], None] = lambda n: None,
    on_events: Callable[[int, int], None] = lambda done, total: None,
) -> dict[str, Any]:
    """Rebuild, save and register a new version; returns its figures beside the serving one's.

    Sets this process's garbage-collection thresholds (:func:`deploy.runtime.tune_gc`)."""
    tune_gc()
    keys = Keys(settings.redis_prefix)
    redis = aioredis.from_url(settings.redis_url)
    try:
        return await _replay(settings, keys, redis, start, params, name, promote, on_records, on_events)
    finally:
        await redis.aclose()


async def _replay(settings: Settings, keys: Keys, redis: Any, start: str, params: dict[str, float] | None,
                  name: str | None, promote: bool, on_records: Callable[[int], None],
                  on_events: Callable[[int, int], None]) -> dict[str, Any]:
    topic = INTERACTIONS.full_name(settings)
    partitions = range(settings.partitions)
    where_from = parse_start(start)
    if where_from == "earliest":
        begin = dict.fromkeys(partitions, 0)
    elif isinstance(where_from, dict):
        begin = {p: where_from.get(p, 0) for p in partitions}
    else:
        begin = await offsets_at(settings, topic, list(partitions), float(where_from))
    serving = await _serving(redis, keys)
    if params is None:
        params = serving["params"] if serving else {}
    name = name or f"r{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"

    # The catalogue position the new version is current with: workers that adopt it
    # follow the catalogue stream on from here.
    last = await redis.xrevrange(keys.catalogue, count=1)
    catalogue_id = last[0][0].decode() if last else "0-0"

    started = time.perf_counter()
    item_ends: dict[int, int] = {}
    items = await _read(settings, ITEMS.full_name(settings), frozenset(ITEMS.types),
                        dict.fromkeys(partitions, (0, None)), item_ends, on_records)
    ends: dict[int, int] = {}
    interactions = await _read(settings, topic, frozenset(INTERACTIONS.types),
                               {p: (begin[p], None) for p in partitions}, ends, on_records)
    read_s = time.perf_counter() - started

    # Each partition in its own order, partitions and the catalogue merged by the time the
    # log received each record: the order a worker keeping up with the log learned them in.
    streams = [[(t, e, w, False) for t, e, w in rows] for rows in interactions.values()]
    streams += [[(t, e, w, True) for t, e, w in rows] for rows in items.values()]
    merged = list(heapq.merge(*streams, key=lambda row: row[0]))
    deleted_at = {row[1].user_id: i for i, row in enumerate(merged)
                  if not row[3] and row[1].type == "user_deleted"}

    service = RecommenderService(settings.model_copy(update={"recs_challengers": []}))
    version = Version(name, service.versions["v1"].model.__class__(**params), service.versions["v1"].window,
                      origin="replay")
    service.versions = {name: version}
    service.serving = name
    service.publish_facts = False  # it learns every partition itself: no other worker to tell
    sink = Coalescer()
    seen: set[str] = set()
    skipped = 0
    learn_started = time.perf_counter()
    for i, (_, event, where, is_item) in enumerate(merged):
        if event.event_id in seen:  # a producer's retry: one event, learned once
            continue
        seen.add(event.event_id)
        if is_item:
            service.learn_item(event)
        elif event.type != "user_deleted" and deleted_at.get(event.user_id, -1) > i:
            skipped += 1  # its user asked to be forgotten later in the log
        else:
            service.learn(sink, event, keys, where)
        if i % 5000 == 0:
            on_events(i, len(merged))
            sink = Coalescer()  # nothing is written: what the service queues is dropped
    on_events(len(merged), len(merged))
    learn_s = time.perf_counter() - learn_started
    service.gate.next = dict(ends)
    service.catalogue_id = catalogue_id

    meta, body = service.snapshot(topic)
    store = SnapshotStore(Path(settings.snapshot_dir) / settings.consumer_group, keep=settings.snapshot_keep)
    saved = await asyncio.to_thread(store.save, meta, body)
    entry = {
        "replay": True, "name": MODEL, "serving": None, "previous": None,
        "versions": [version.summary()],
        "baseline": {"targets": service.baseline_score.targets, "hits": service.baseline_score.hits,
                     "ndcg_sum": service.baseline_score.ndcg_sum},
        "snapshot": {"seq": saved.seq, "version": name, "offsets": saved.offsets, "path": saved.path,
                     "size": saved.size, "created_at": saved.created_at},
        "from": start, "updated_at": time.time(),
    }
    await redis.hset(keys.registry, f"{MODEL}:replay:{name}", orjson.dumps(entry))
    if promote:
        await redis.hset(keys.serving, MODEL, orjson.dumps({
            "version": name, "by": "replay", "action": "promote", "requested_at": time.time(),
            "detail": f"rebuilt from the log from {start} and promoted by eddy replay",
        }))

    def figures(targets: int, hits: int, ndcg_sum: float) -> dict[str, Any]:
        return {"targets": targets, "hr_at_10": hits / targets if targets else None,
                "ndcg_at_10": ndcg_sum / targets if targets else None}

    learned = sum(len(rows) for rows in interactions.values())
    n_items = sum(len(rows) for rows in items.values())
    return {
        "version": name, "params": version.model.params(), "from": start,
        "events": len(merged), "interactions": learned, "items": n_items,
        "skipped_deleted": skipped,
        "offsets": {str(p): o for p, o in sorted(ends.items())},
        "read_s": round(read_s, 3), "learn_s": round(learn_s, 3),
        "events_per_s": round(len(merged) / max(1e-9, learn_s), 1),
        "metrics": figures(version.score.targets, version.score.hits, version.score.ndcg_sum),
        "baseline": figures(service.baseline_score.targets, service.baseline_score.hits,
                            service.baseline_score.ndcg_sum),
        "serving": serving and {"version": serving["version"], **figures(
            serving["targets"], serving["hits"], serving["ndcg_sum"])},
        "snapshot": saved.path,
        "promoted": promote,
    }


async def _serving(redis: Any, keys: Keys) -> dict[str, Any] | None:
    """The serving version's parameters and figures, summed over live workers."""
    raw = await redis.hgetall(keys.registry)
    docs = [orjson.loads(v) for k, v in raw.items() if k.startswith(f"{MODEL}:".encode())]
    live = [d for d in docs if not d.get("replay")]
    if not live:
        return None
    name = max(live, key=lambda d: d["updated_at"])["serving"]
    out: dict[str, Any] = {"version": name, "targets": 0, "hits": 0, "ndcg_sum": 0.0, "params": {}}
    for doc in live:
        for v in doc["versions"]:
            if v["version"] == name:
                out["params"] = v["params"]
                for f in ("targets", "hits", "ndcg_sum"):
                    out[f] += v[f]
    return out
