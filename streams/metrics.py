"""Prometheus metrics of the worker, served on ``EDDY_WORKER_METRICS_PORT``.

Counters that are not idempotent under redelivery (records processed, duplicates, dead
letters) live here rather than in Redis, whose content must not change when a batch is
delivered twice.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECORDS = Counter("eddy_worker_records_total", "Records consumed, by topic.", ["topic"])
APPLIED = Counter("eddy_worker_events_applied_total", "Events whose effects were written.", ["topic"])
DUPLICATES = Counter("eddy_worker_duplicates_total", "Repeated event_ids dropped.", ["topic"])
DEAD_LETTERS = Counter("eddy_worker_dead_letters_total", "Records sent to dead-letters.", ["topic"])
BATCH_SECONDS = Histogram(
    "eddy_worker_batch_seconds",
    "Time to decode, apply and write one batch.",
    ["topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
CATCH_UP_RECORDS = Counter(
    "eddy_worker_catch_up_records_total", "Records re-read for a restored model to catch up.", ["topic"]
)
SNAPSHOTS = Counter("eddy_worker_snapshots_total", "Model snapshots written.", ["model"])
SNAPSHOT_SECONDS = Histogram(
    "eddy_worker_snapshot_seconds", "Time to write one model snapshot.", ["model"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
