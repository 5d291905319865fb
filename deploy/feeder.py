"""Feeds simulated events into the API in batches at a steady rate, as a real producer would.

On 503 (Kafka away) or a connection error it waits and resends the same batch: the events
carry their own event_ids, so a resend never doubles an effect.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
from rich.console import Console

from deploy.simulator import SimConfig, Simulator


#: How long the feeder keeps resending a batch the API does not take before giving up.
GIVE_UP_S = 300.0


def post_batch(
    client: httpx.Client, url: str, batch: list[dict], headers: dict[str, str],
    on_retry: Callable[[str, float], None] | None = None, give_up_s: float = GIVE_UP_S,
) -> None:
    """POST one batch, retrying while the API or Kafka is unavailable (each retry reported
    to ``on_retry`` with the reason and the wait); raise on 4xx, or when it has not been
    taken for ``give_up_s``."""
    delay = 0.5
    started = time.monotonic()
    while True:
        try:
            resp = client.post(url, json=batch, headers=headers)
            reason = f"{resp.status_code} {resp.text[:200]}"
        except httpx.TransportError as exc:
            resp, reason = None, f"{type(exc).__name__}: {exc}"
        if resp is not None and resp.status_code == 202:
            return
        if resp is not None and 400 <= resp.status_code < 500:
            raise RuntimeError(f"API refused a batch: {resp.status_code} {resp.text[:500]}")
        if time.monotonic() - started + delay > give_up_s:
            raise RuntimeError(f"the API at {url} has not taken a batch for {give_up_s:.0f} s (last: {reason})")
        if on_retry is not None:
            on_retry(reason, delay)
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


#: How far back the demo's simulated history starts.
DEMO_HISTORY_S = 86_400.0


def demo_simulator(seed: int, *, scrapes: bool = True, now: float | None = None) -> Simulator:
    """The simulator the demo feeds: its clock starts a day before ``now`` (default: the wall
    clock), not on a fixed date, so its items' deadlines and its bids' outcomes fall around
    the time the demo runs, beside the events a user of the demo sends with the real time."""
    start = (time.time() if now is None else now) - DEMO_HISTORY_S
    return Simulator(SimConfig(seed=seed, start_ts=start, **({} if scrapes else {"weight_scrape": 0.0})))


def on_the_wall_clock(events: Iterator[dict]) -> Iterator[dict]:
    """The simulator's events, none stamped later than the wall clock when it is taken: the
    simulated clock runs 30 s per event, so at a few events a second it soon runs ahead of
    the real one, and the API refuses events from the future."""
    for event in events:
        now = time.time()
        for field in ("ts", "job_posted_at"):
            if isinstance(event.get(field), float) and event[field] > now:
                event[field] = now
        yield event


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
    give_up_s: float = GIVE_UP_S,
) -> int:
    """Stream the simulator into ``api_url``; returns the number of events sent.

    ``scrapes=False`` leaves scrape attempts out, for when a real scraper (``eddy scraper``)
    reports the simulated domains' attempts and the two must not mix.
    """
    sim = demo_simulator(seed, scrapes=scrapes)
    events = on_the_wall_clock(sim.events())
    headers = {"X-API-Key": api_key} if api_key else {}
    url = api_url.rstrip("/") + "/api/events"
    sent = 0
    started = time.monotonic()
    last_report = started

    def retrying(reason: str, delay: float) -> None:
        console.log(f"[yellow]the API did not take the batch ({reason}); retrying in {delay:.1f} s[/]")

    console.log(f"streaming simulated events to {url}" + (f" at {rate:g}/s" if rate > 0 else ""))
    with httpx.Client(timeout=30.0) as client:
        while limit == 0 or sent < limit:
            size = batch if limit == 0 else min(batch, limit - sent)
            post_batch(client, url, [next(events) for _ in range(size)], headers, on_retry=retrying,
                       give_up_s=give_up_s)
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
    console.log(f"done: sent {sent} events in {time.monotonic() - started:.1f} s")
    return sent
