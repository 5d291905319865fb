"""Versioned datasets: the bids topic, joined with its outcomes, as a dated Parquet file.

``export_bids`` reads the ``bids`` topic from its beginning up to the end offsets seen
when it starts, joins every bid with its outcome by ``bid_id`` and writes one row per bid
that has an outcome, in ``bids-<UTC time>.parquet``. Beside it go ``<stem>.schema.json``
(each column's Arrow type and meaning) and ``<stem>.manifest.json`` (rows, time ranges,
the exact offsets read, what was left out and the file's SHA-256), so a batch model can be
trained offline from a dataset that is named, checked and reproducible.

Each row says where its features came from (``features_from``). ``"worker"`` rows carry
the features, score, baseline and model version the worker stored in Redis when the bid
was placed: exactly what the online model saw and learned from. When that record is gone
(expired after ``EDDY_BID_RETENTION_S``, or Redis was emptied), ``"replay"`` rows carry
features (and the baseline) recomputed by replaying every bid and outcome of the log
through :class:`BidFeaturizer` in event-time order: what a single worker reading the log
in event-time order would have seen. They differ from the worker's when several workers
split the profiles' histories, or when events reached the worker out of event-time
order. Replay rows have no score or model version: those depend on the order the model
learned in, which the log does not record.

Events are decoded and given ids and times as the worker does (:func:`decode_batch`);
events that cannot be used (unreadable, invalid, or not a bid event) are counted in the
manifest's ``invalid_records``, one per event (an envelope may hold several). An event
whose id was already seen, a bid placed again and a second outcome are skipped as the
worker skips them, and counted as ``duplicates``. The manifest's ``source_offsets`` give,
per partition, the offsets read (``start`` inclusive, ``end`` exclusive): exporting the
same offsets again reads the same events.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import redis
from kafka import KafkaConsumer, TopicPartition

from online_models.bids import BidFeaturizer
from schemas.events import BidEvent, BidOutcomeEvent
from schemas.keys import Keys
from schemas.settings import Settings
from schemas.topics import BIDS
from streams.pipeline import decode_batch

__all__ = [
    "BIDS_SCHEMA",
    "Joined",
    "LoggedEvent",
    "SourceRecord",
    "decode_bids",
    "export_bids",
    "join_bids",
    "read_topic",
    "replay_features",
]

READ_TIMEOUT_S = 60.0
REDIS_CHUNK = 1_000
_UTC_US = pa.timestamp("us", tz="UTC")

_COLUMNS: list[tuple[str, pa.DataType, bool, str]] = [
    ("bid_id", pa.string(), False, "The bid's id (the topic's key)."),
    ("profile_id", pa.string(), False, "The freelancer who placed the bid."),
    ("job_id", pa.string(), True, "The job bid on, when the bid named one."),
    ("placed_at", _UTC_US, False, "Event time the bid was placed."),
    ("outcome_at", _UTC_US, False, "Event time of the bid's outcome."),
    ("won", pa.bool_(), False, "The label: whether the bid won the job."),
    ("delay_s", pa.float64(), False, "Seconds from placement to outcome (event time)."),
    ("amount", pa.float64(), True, "The amount bid."),
    ("job_budget", pa.float64(), True, "The job's budget, when known."),
    ("score", pa.float64(), True, "Win probability the online model gave when the bid was placed (worker rows only)."),
    ("baseline", pa.float64(), True, "The profile's smoothed historical win rate when the bid was placed."),
    ("model_version", pa.string(), True, "Version of the online model that scored the bid (worker rows only)."),
    ("features", pa.map_(pa.string(), pa.float64()), False, "Feature name -> value the bid was scored with."),
    ("features_from", pa.string(), False,
     ("'worker': stored by the worker, exactly what the online model saw; "
      "'replay': recomputed from the log in event-time order.")),
    ("bid_partition", pa.int64(), False, "Partition of the bids topic holding the bid."),
    ("bid_offset", pa.int64(), False, "Offset of the record holding the bid."),
    ("outcome_partition", pa.int64(), False, "Partition of the bids topic holding the outcome."),
    ("outcome_offset", pa.int64(), False, "Offset of the record holding the outcome."),
]

#: The dataset's Arrow schema; each field's description is in its metadata.
BIDS_SCHEMA = pa.schema(
    [pa.field(name, kind, nullable=nullable, metadata={"description": doc}) for name, kind, nullable, doc in _COLUMNS]
)


@dataclass(frozen=True)
class SourceRecord:
    """A Kafka record as :func:`decode_batch` reads it (``timestamp`` in seconds)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float


@dataclass(frozen=True)
class LoggedEvent:
    """A bid or outcome with where it sits in the log; ``seq`` is its position in log order."""

    event: BidEvent | BidOutcomeEvent
    partition: int
    offset: int
    seq: int


@dataclass
class Joined:
    """Bids paired with their outcomes, and what could not be paired."""

    pairs: list[tuple[LoggedEvent, LoggedEvent]]
    bids: list[LoggedEvent]  # every bid placed once, in log order
    outcomes: list[LoggedEvent]  # every outcome of a known bid, in log order
    bids_without_outcome: int
    outcomes_without_bid: int
    duplicates: int


def read_topic(
    settings: Settings, topic: str, *, timeout_s: float = READ_TIMEOUT_S
) -> tuple[list[SourceRecord], dict[int, dict[str, int]]]:
    """Every record of ``topic`` from the beginning up to its end when reading starts.

    Returns the records in (partition, offset) order and, per partition, the offsets read
    (``start`` inclusive, ``end`` exclusive). Records produced later are left out, so the
    offsets describe the export exactly.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id="eddy-export",
        group_id=None,  # a plain assignment: no group to join, no offsets committed
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,  # the end is known: don't let the broker hold empty fetches
        allow_auto_create_topics=False,
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise RuntimeError(f"topic {topic!r} does not exist on {settings.kafka_bootstrap}; run `eddy topics`")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        starts = consumer.beginning_offsets(tps)
        listed = consumer.end_offsets(tps)
        consumer.seek_to_beginning(*tps)
        # Tansu answers ListOffsets with one past the first offset of the last record
        # batch, short of the real end; the high watermark of the first fetch is right.
        # The end of each partition is the larger of the two, fixed once it is known.
        ends: dict[Any, int] = {}
        kept: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while True:
            for tp in tps:
                if tp not in ends and consumer.highwater(tp) is not None:
                    ends[tp] = max(listed[tp], consumer.highwater(tp))
            if len(ends) == len(tps) and all(consumer.position(tp) >= ends[tp] for tp in tps):
                break
            if time.monotonic() > deadline:
                behind = {tp.partition: (consumer.position(tp), ends.get(tp, listed[tp])) for tp in tps}
                raise TimeoutError(f"reading {topic} did not reach its end within {timeout_s}s: "
                                   f"(position, end) by partition {behind}")
            for tp, records in consumer.poll(timeout_ms=200).items():
                end = ends.setdefault(tp, max(listed[tp], consumer.highwater(tp) or 0))
                kept.extend(r for r in records if r.offset < end)
        kept.sort(key=lambda r: (r.partition, r.offset))
        out = [
            SourceRecord(r.topic, r.partition, r.offset, r.key, r.value,
                         r.timestamp / 1000 if r.timestamp is not None and r.timestamp > 0 else 0.0)
            for r in kept
        ]
        offsets = {tp.partition: {"start": starts[tp], "end": ends[tp]} for tp in tps}
        return out, offsets
    finally:
        consumer.close()


def decode_bids(records: Sequence[SourceRecord], *, max_bytes: int) -> tuple[list[LoggedEvent], int]:
    """Records -> (bid and outcome events in log order, how many events were invalid)."""
    decoded = decode_batch(records, allowed_types=frozenset(BIDS.types), max_bytes=max_bytes)
    events = [LoggedEvent(event, rec.partition, rec.offset, seq) for seq, (event, rec) in enumerate(decoded.events)]
    return events, len(decoded.dead)


def join_bids(events: Iterable[LoggedEvent]) -> Joined:
    """Pair each bid with its outcome by ``bid_id``, skipping what the worker would skip.

    An event id seen before, a bid id placed again and a second outcome of a bid are
    duplicates; the first in log order counts.
    """
    seen_ids: set[str] = set()
    bids: dict[str, LoggedEvent] = {}
    outcomes: dict[str, LoggedEvent] = {}
    duplicates = 0
    for logged in events:
        event = logged.event
        if event.event_id in seen_ids:
            duplicates += 1
            continue
        seen_ids.add(event.event_id)
        table = bids if event.type == "bid" else outcomes
        if event.bid_id in table:
            duplicates += 1
            continue
        table[event.bid_id] = logged
    pairs = [(bid, outcomes[bid_id]) for bid_id, bid in bids.items() if bid_id in outcomes]
    return Joined(
        pairs=pairs,
        bids=list(bids.values()),
        outcomes=[o for bid_id, o in outcomes.items() if bid_id in bids],
        bids_without_outcome=len(bids) - len(pairs),
        outcomes_without_bid=sum(bid_id not in bids for bid_id in outcomes),
        duplicates=duplicates,
    )


def replay_features(
    bids: Iterable[LoggedEvent], outcomes: Iterable[LoggedEvent]
) -> dict[str, tuple[dict[str, float], float]]:
    """bid_id -> (features, baseline) from one featurizer fed the log in event-time order.

    Every bid is learned at its placement time and every outcome at its own time (ties in
    log order), as the worker does with each event; outcomes need their bid's profile.
    """
    bids = list(bids)
    profile_of = {b.event.bid_id: b.event.profile_id for b in bids}
    timeline = sorted([*bids, *outcomes], key=lambda e: (e.event.ts, e.seq))
    featurizer = BidFeaturizer()
    out: dict[str, tuple[dict[str, float], float]] = {}
    for logged in timeline:
        event = logged.event
        if event.type == "bid":
            x = featurizer.learn_bid(event.model_dump(mode="json", exclude_none=True), event.ts)
            out[event.bid_id] = (x, featurizer.baseline(event.profile_id, event.ts))
        else:
            featurizer.learn_outcome(profile_of[event.bid_id], event.won, event.ts)
    return out


def _stored(redis_client: Any, keys: Keys, bid_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """bid_id -> what the worker stored when it scored the bid, for bids still in Redis."""
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(bid_ids), REDIS_CHUNK):
        chunk = bid_ids[i : i + REDIS_CHUNK]
        pipe = redis_client.pipeline(transaction=False)
        for bid_id in chunk:
            pipe.hmget(keys.bid(bid_id), "features", "score", "baseline", "model_version")
        for bid_id, (features, score, baseline, version) in zip(chunk, pipe.execute()):
            if features is None:
                continue
            out[bid_id] = {
                "features": orjson.loads(features),
                "score": None if score is None else float(score),
                "baseline": None if baseline is None else float(baseline),
                "model_version": None if version is None else version.decode(),
            }
    return out


def _micros(ts: float) -> int:
    return round(ts * 1_000_000)


def _iso(micros: int | None) -> str | None:
    if micros is None:
        return None
    return datetime.fromtimestamp(micros / 1_000_000, UTC).isoformat().replace("+00:00", "Z")


def _rows(joined: Joined, stored: dict[str, dict[str, Any]],
          replayed: dict[str, tuple[dict[str, float], float]]) -> list[dict[str, Any]]:
    rows = []
    for bid, outcome in joined.pairs:
        b, o = bid.event, outcome.event
        worker = stored.get(b.bid_id)
        if worker is not None:
            features, source = worker["features"], "worker"
            score, baseline, version = worker["score"], worker["baseline"], worker["model_version"]
        else:
            features, baseline = replayed[b.bid_id]
            source, score, version = "replay", None, None
        rows.append({
            "bid_id": b.bid_id, "profile_id": b.profile_id, "job_id": b.job_id,
            "placed_at": _micros(b.ts), "outcome_at": _micros(o.ts), "won": o.won, "delay_s": o.ts - b.ts,
            "amount": b.amount, "job_budget": b.job_budget,
            "score": score, "baseline": baseline, "model_version": version,
            "features": sorted(features.items()), "features_from": source,
            "bid_partition": bid.partition, "bid_offset": bid.offset,
            "outcome_partition": outcome.partition, "outcome_offset": outcome.offset,
        })
    rows.sort(key=lambda r: (r["placed_at"], r["bid_id"]))
    return rows


def _schema_doc() -> dict[str, Any]:
    return {
        "dataset": "bids",
        "format": "parquet",
        "fields": [
            {"name": f.name, "type": str(f.type), "nullable": f.nullable,
             "description": f.metadata[b"description"].decode()}
            for f in BIDS_SCHEMA
        ],
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")
    os.replace(tmp, path)


def export_bids(
    settings: Settings,
    out_dir: Path,
    *,
    redis_client: Any = None,
    now: datetime | None = None,
    timeout_s: float = READ_TIMEOUT_S,
) -> dict[str, Any]:
    """Write the bids that have an outcome as a dated Parquet file, its schema and its
    manifest into ``out_dir``; returns the manifest.

    ``redis_client`` is a synchronous redis client (one is opened on ``settings.redis_url``
    when not given). Refuses to overwrite an export of the same second: a dataset, once
    written, does not change.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    stem = f"bids-{now:%Y%m%dT%H%M%SZ}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_path = out_dir / f"{stem}.parquet"
    if data_path.exists():
        raise FileExistsError(f"{data_path} already exists; datasets are never overwritten")
    topic = BIDS.full_name(settings)

    records, offsets = read_topic(settings, topic, timeout_s=timeout_s)
    events, invalid = decode_bids(records, max_bytes=settings.max_event_bytes)
    joined = join_bids(events)

    own_client = redis_client is None
    if own_client:
        redis_client = redis.Redis.from_url(settings.redis_url)
    try:
        stored = _stored(redis_client, Keys(settings.redis_prefix), [b.event.bid_id for b, _ in joined.pairs])
    finally:
        if own_client:
            redis_client.close()
    missing = any(b.event.bid_id not in stored for b, _ in joined.pairs)
    replayed = replay_features(joined.bids, joined.outcomes) if missing else {}
    rows = _rows(joined, stored, replayed)

    table = pa.Table.from_pylist(rows, schema=BIDS_SCHEMA)
    tmp = data_path.with_name(data_path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, data_path)  # never a half-written dataset under the real name
    _write_json(out_dir / f"{stem}.schema.json", _schema_doc())

    def span(column: str) -> dict[str, str | None]:
        values = [r[column] for r in rows]
        return {"min": _iso(min(values, default=None)), "max": _iso(max(values, default=None))}

    manifest = {
        "file": data_path.name,
        "schema": f"{stem}.schema.json",
        "rows": len(rows),
        "created_at": now.isoformat().replace("+00:00", "Z"),
        "topic": topic,
        "placed_at": span("placed_at"),
        "outcome_at": span("outcome_at"),
        "source_offsets": {str(p): o for p, o in sorted(offsets.items())},
        "bids_without_outcome": joined.bids_without_outcome,
        "outcomes_without_bid": joined.outcomes_without_bid,
        "invalid_records": invalid,
        "duplicates": joined.duplicates,
        "features_from": {
            "worker": sum(r["features_from"] == "worker" for r in rows),
            "replay": sum(r["features_from"] == "replay" for r in rows),
        },
        "sha256": _sha256(data_path),
    }
    _write_json(out_dir / f"{stem}.manifest.json", manifest)
    return manifest
