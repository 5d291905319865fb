"""Scrape attempts: success counters per domain and strategy, for the self-healing scrapers.

One Redis hash per domain with ``{strategy}:{counter}`` fields: attempts, successes,
failures, the current run of consecutive failures, latency sum and error-type counts.
"""

from __future__ import annotations

from schemas.events import ScrapeAttemptEvent
from schemas.keys import Keys
from schemas.topics import SCRAPE_ATTEMPTS
from streams.pipeline import Effects


def apply_attempt(pipe: Effects, event: ScrapeAttemptEvent, keys: Keys) -> None:
    """Queue the counter updates of one scrape attempt."""
    key = keys.strategy(event.domain)
    s = event.strategy
    pipe.hincrby(key, f"{s}:attempts", 1)
    if event.success:
        pipe.hincrby(key, f"{s}:successes", 1)
        pipe.hset(key, f"{s}:consecutive_failures", 0)
    else:
        pipe.hincrby(key, f"{s}:failures", 1)
        pipe.hincrby(key, f"{s}:consecutive_failures", 1)
        pipe.hincrby(key, f"{s}:error:{event.error_type or 'unknown'}", 1)
    if event.latency_ms is not None:
        pipe.hincrbyfloat(key, f"{s}:latency_ms_sum", event.latency_ms)
        pipe.hincrby(key, f"{s}:latency_n", 1)
    if event.items_found is not None:
        pipe.hincrby(key, f"{s}:items_found", event.items_found)
    pipe.hset(key, f"{s}:last_ts", event.ts)


def register(ctx) -> None:  # noqa: ANN001 - streams.app.WorkerContext (import cycle)
    ctx.consume(SCRAPE_ATTEMPTS, apply_attempt, name="count_scrape_attempts")
