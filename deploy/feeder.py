"""Feeds simulated events into the API in batches at a steady rate, as a real producer would.

On 503 (Kafka away) or a connection error it waits and resends the same batch: the events
carry their own event_ids, so a resend never doubles an effect.
"""

from __future__ import annotations

import time

import httpx
from rich.console import Console

from deploy.simulator import SimConfig, Simulator


def post_batch(client: httpx.Client, url: str, batch: list[dict], headers: dict[str, str]) -> None:
    """POST one batch, retrying while the API or Kafka is unavailable; raise on 4xx."""
    delay = 0.5
    while True:
        try:
            resp = client.post(url, json=batch, headers=headers)
        except httpx.TransportError:
            resp = None
        if resp is not None and resp.status_code == 202:
            return
        if resp is not None and 400 <= resp.status_code < 500:
            raise RuntimeError(f"API refused a batch: {resp.status_code} {resp.text[:500]}")
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


def feed(
    api_url: str,
    *,
    rate: float,
    batch: int,
    limit: int,
    seed: int,
    api_key: str | None,
    console: Console,
    scrapes: bool = True,
) -> int:
    """Stream the simulator into ``api_url``; returns the number of events sent.

    ``scrapes=False`` leaves scrape attempts out, for when a real scraper (``eddy scraper``)
    reports the simulated domains' attempts and the two must not mix.
    """
    sim = Simulator(SimConfig(seed=seed) if scrapes else SimConfig(seed=seed, weight_scrape=0.0))
    events = sim.events()
    headers = {"X-API-Key": api_key} if api_key else {}
    url = api_url.rstrip("/") + "/api/events"
    sent = 0
    started = time.monotonic()
    last_report = started
    with httpx.Client(timeout=30.0) as client:
        while limit == 0 or sent < limit:
            size = batch if limit == 0 else min(batch, limit - sent)
            post_batch(client, url, [next(events) for _ in range(size)], headers)
            sent += size
            if rate > 0:
                # Pace against the start, so short stalls are caught up rather than lost.
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            now = time.monotonic()
            if now - last_report >= 5:
                console.log(f"sent {sent} events ({sent / (now - started):.0f}/s)")
                last_report = now
    return sent
