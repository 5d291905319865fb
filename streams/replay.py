"""Reading the Kafka log back: the catch-up of a restored model and ``eddy replay``.

A model's snapshot says which offset of each partition it has learned up to. When a
worker resumes from a snapshot older than the group's committed offsets (always, after a
crash), the records in between are read here with a plain consumer outside the group and
learned before the agent's first batch of that partition, so the model neither starts cold
nor learns an event twice. A partition the model has never seen is read from its start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.settings import Settings

log = logging.getLogger(__name__)

EMPTY_FETCHES_TO_STOP = 5


@dataclass(frozen=True)
class KafkaRecord:
    """An aiokafka record in the shape the pipeline reads (timestamp in seconds)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float


def consumer(settings: Settings, **kw: object) -> AIOKafkaConsumer:
    """A consumer outside every group: it commits nothing and moves no one's offsets."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        **kw,
    )


async def read_ranges(
    settings: Settings, topic: str, ranges: Mapping[int, tuple[int, int | None]], *, max_records: int = 5000,
    ends: dict[int, int] | None = None,
) -> AsyncIterator[list[KafkaRecord]]:
    """Batches of the records of ``topic`` in ``ranges`` (partition -> [start, stop)), each
    partition in offset order. ``stop`` None reads to the end of the log as it is now; the
    offsets each partition was read up to are left in ``ends``."""
    ends = {} if ends is None else ends
    if not ranges:
        return
    kafka = consumer(settings)
    await kafka.start()
    try:
        tps = {p: TopicPartition(topic, p) for p in ranges}
        kafka.assign(list(tps.values()))
        listed = await kafka.end_offsets(list(tps.values()))
        # Tansu answers ListOffsets with one past the first offset of the last record batch,
        # short of the real end: an open end is fixed by the first fetch's high watermark.
        open_end = {p for p, (_, stop) in ranges.items() if stop is None}
        for p, (start, stop) in ranges.items():
            ends[p] = listed[tps[p]] if stop is None else stop
            kafka.seek(tps[p], start)
        remaining = {p for p, (start, _) in ranges.items() if start < ends[p] or p in open_end}
        for p in set(ranges) - remaining:
            kafka.pause(tps[p])
        empty = 0
        while remaining:
            fetched = await kafka.getmany(*[tps[p] for p in remaining], timeout_ms=500, max_records=max_records)
            for p in list(open_end):
                hw = kafka.highwater(tps[p])
                if hw is not None:
                    ends[p] = max(ends[p], hw)
                    open_end.discard(p)
            out: list[KafkaRecord] = []
            for tp, records in fetched.items():
                first, stop = ranges[tp.partition][0], ends[tp.partition]
                out.extend(
                    KafkaRecord(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp / 1000.0)
                    for r in records if first <= r.offset < stop
                )
            for p in list(remaining):
                # Past the stop, or at the end of what the log holds (gaps, a shorter log
                # than the committed offset after a broker lost its data).
                if p not in open_end and await kafka.position(tps[p]) >= ends[p]:
                    remaining.discard(p)
                    kafka.pause(tps[p])
            if out:
                empty = 0
                yield out
            else:
                empty += 1
                if empty >= EMPTY_FETCHES_TO_STOP:
                    log.warning("log of %s ends before %s; read what there is", topic,
                                {p: ends[p] for p in remaining})
                    for p in remaining:
                        ends[p] = await kafka.position(tps[p])
                    return
    finally:
        await kafka.stop()


async def log_bounds(settings: Settings, topic: str, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
    """partition -> (first offset, end offset) of ``topic`` now."""
    kafka = consumer(settings)
    await kafka.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        starts = await kafka.beginning_offsets(tps)
        ends = await kafka.end_offsets(tps)
        return {tp.partition: (starts[tp], ends[tp]) for tp in tps}
    finally:
        await kafka.stop()


async def offsets_at(settings: Settings, topic: str, partitions: Sequence[int], ts: float) -> dict[int, int]:
    """partition -> the first offset whose record time is at or after ``ts`` (the end if none)."""
    kafka = consumer(settings)
    await kafka.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        found = await kafka.offsets_for_times({tp: int(ts * 1000) for tp in tps})
        ends = await kafka.end_offsets(tps)
        return {tp.partition: (found[tp].offset if found.get(tp) else ends[tp]) for tp in tps}
    finally:
        await kafka.stop()


class Progress:
    """Records read, and how fast, for logs and progress bars."""

    def __init__(self) -> None:
        self.records = 0
        self.events = 0
        self.started = time.perf_counter()

    @property
    def rate(self) -> float:
        return self.events / max(1e-9, time.perf_counter() - self.started)
