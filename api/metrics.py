"""Prometheus metrics of the API, served at GET /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS_ACCEPTED = Counter("eddy_api_events_accepted_total", "Events produced to Kafka.", ["type"])
EVENTS_REJECTED = Counter("eddy_api_events_rejected_total", "Events refused with 422.", ["type"])
REQUEST_SECONDS = Histogram(
    "eddy_api_request_seconds",
    "Request latency by route and status.",
    ["route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5),
)
READ_CACHE = Counter(
    "eddy_api_read_cache_total",
    "Reads of cached read-model documents by outcome: hit (a tracked copy, no Redis read), "
    "miss (read from Redis) and stale (Redis away, the last copy served).",
    ["outcome"],
)
