"""Trial 6, sustained load: interactions at a steady rate, half the measured peak, for a
long time, while readers GET lists.

First the peak is measured on this machine (the short version runs at a quarter of it): a
block of interactions is POSTed as fast as the API takes them, and the peak is the block
over the time from the first POST until its last event is applied. Then
half that rate flows for the trial's duration, sampled every second: lag (events Kafka
accepted minus events applied to Redis), the worker's resident memory, and the latency
of GET /api/recommendations. The lag must not grow (its slope stays under 1% of the input
rate), the worker's memory must stay flat within a stated bound after warm-up, and the
API's p99 must stay within its benchmark figure; the lag must never exceed two seconds of
input.

For the run (after the peak is measured) the serving path goes first: the API, Redis and
the reader's process at real-time priority (``SCHED_RR``, :func:`deploy.runtime.serve_first`),
the worker and the broker on the default scheduler, as if the serving path had cores of its
own. On two shared cores a read otherwise waits for the CPU at each of its wake-ups (API,
Redis, API, reader) behind a worker busy with its batch: that wait, not the API, made the
p99 of earlier runs (docs/reliability.md). ``EDDY_FAULTS_SERVE_FIRST=0`` runs it without.

``EDDY_FAULTS_SHARE`` (share of the peak) and ``EDDY_FAULTS_DURATION_S`` override the
scale's values, e.g. to find the rate the worker sustains.
"""

from __future__ import annotations

import http.client
import multiprocessing
import os
import queue
import random
import sys
import time
import traceback
from typing import Any
from urllib.parse import urlsplit

import redis as redis_lib

from deploy.runtime import serve_first
from tests.faults.harness import (
    Producer,
    Rig,
    TrialResult,
    api_pid,
    catalogue,
    ledger_event,
    percentile,
    post_all,
    rss_mb,
    start_api,
)

SCALES = {
    # p99 bound: docs/benchmarks.md, GET /api/recommendations at half its peak (3.2 ms,
    # 2026-12-03 09:02 UTC, lists served from the API's tracked copies).
    "full": {"duration_s": 1800.0, "calibrate": 40_000, "share": 0.5, "users": 5_000, "items": 1_000,
             "rss_mb": 50.0, "p99_ms": 3.2, "slope_share": 0.01},
    # CI: seconds on a shared machine, at a quarter of the peak; over ten samples one batch
    # more or less moves the slope a lot, and p99 of ~150 GETs is their maximum, so the
    # bounds catch gross regressions only.
    "short": {"duration_s": 10.0, "calibrate": 3_000, "share": 0.25, "users": 1_000, "items": 300,
              "rss_mb": 40.0, "p99_ms": 250.0, "slope_share": 0.1},
}


def read_lists(api: str, users: int, rate: float, priority: int, stop: Any, out: Any) -> None:
    """The reader's process: GET /api/recommendations for random known users, ``rate`` per
    second, until ``stop`` is set; then ``(latencies, server_errors)`` on ``out``, or the
    traceback of what stopped it."""
    try:
        out.put(_read_lists(api, users, rate, priority, stop))
    except BaseException:  # noqa: BLE001 - reported by the trial, not lost in a process
        out.put(traceback.format_exc())


def _read_lists(api: str, users: int, rate: float, priority: int, stop: Any) -> tuple[list, int]:
    # http.client on one keep-alive connection, in a process of its own (no GIL shared with
    # the producer): the benchmark's GET figure is measured with a raw client too, so both
    # latencies carry little client time. At ``priority`` (SCHED_RR) the reader does not
    # wait a scheduler slice behind the worker to see its answers, as a client on another
    # machine would not.
    if priority:
        serve_first(priority)
    rng = random.Random(3)
    address = urlsplit(api)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10.0)
    latencies: list[tuple[float, float]] = []
    errors = 0
    while not stop.wait(1 / rate):
        start = time.perf_counter()
        try:
            conn.request("GET", f"/api/recommendations?user_id=u{rng.randrange(users)}")
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):  # a timeout counts as an error and as its wait
            conn.close()
            errors += 1
            latencies.append((time.monotonic(), time.perf_counter() - start))
            continue
        latencies.append((time.monotonic(), time.perf_counter() - start))
        errors += resp.status >= 500
    conn.close()
    return latencies, errors


class Reader:
    """Reads lists from a process of its own (:func:`read_lists`); latencies kept."""

    def __init__(self, api: str, users: int, rate: float = 20.0, *, priority: int = 0) -> None:
        context = multiprocessing.get_context("spawn")  # the trial's threads must not be forked
        self.stop_event, self.out = context.Event(), context.Queue()
        self.process = context.Process(target=read_lists, name="reader", daemon=True,
                                       args=(api, users, rate, priority, self.stop_event, self.out))
        self.latencies: list[tuple[float, float]] = []
        self.server_errors = 0

    def start(self) -> None:
        self.process.start()

    def halt(self) -> None:
        """Stop the reader and take its figures; raises what stopped it, if anything did."""
        self.stop_event.set()
        deadline = time.monotonic() + 60
        result = None
        while result is None and time.monotonic() < deadline:
            try:
                result = self.out.get(timeout=1.0)  # before join: a full pipe would block the child's exit
            except queue.Empty:
                if not self.process.is_alive():
                    break
        self.process.join(15)
        if not isinstance(result, tuple):
            raise RuntimeError(f"the reader stopped (exit code {self.process.exitcode}): {result or 'no figures'}")
        self.latencies, self.server_errors = result

    def close(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


#: Highest input rate the trial will run at, whatever the peak measured.
MAX_RATE = 5_000.0


def measure_peak(rig: Rig, api: str, n: int, users: int, items: int) -> float:
    """Interactions/s from POST to Redis when a block of ``n`` is sent as fast as the API
    takes it: from the first POST until the last event is applied.

    Not read between two marks of the applied counter: a worker batch is bounded in
    records, and an envelope record holds a whole POST's events for its partition, so one
    batch can apply the whole block and the counter jumps from 0 to ``n``.
    """
    base = rig.stack.applied("interactions")
    events = (dict(ledger_event(s, users, items), event_id=f"peak{s}") for s in range(n))
    producer = Producer(api, events, rate=0, batch=500, keep=False)
    start = time.monotonic()
    producer.start()
    rig.stack.wait_applied("interactions", base + n, timeout_s=600)
    took = time.monotonic() - start
    producer.finish()
    return n / took


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    if len(points) < 2:
        return 0.0
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def median(values: list[float]) -> float:
    return percentile(values, 0.5)


def run(scale: str) -> TrialResult:
    p = {**SCALES[scale]}
    for name, var in (("share", "EDDY_FAULTS_SHARE"), ("duration_s", "EDDY_FAULTS_DURATION_S")):
        if os.environ.get(var):
            p[name] = float(os.environ[var])
    result = TrialResult("sustained", scale)
    rig = Rig("sustained")
    reader: Reader | None = None
    try:
        rig.stack.start_worker("worker")
        api = start_api(rig)
        post_all(api, catalogue(p["items"]))
        peak = measure_peak(rig, api, p["calibrate"], p["users"], p["items"])
        # Capped: a mismeasured peak must not turn into a flood the runner cannot hold.
        rate = min(peak * p["share"], MAX_RATE)
        print(f"sustained: peak {peak:.0f}/s, running at {rate:.0f}/s for {p['duration_s']:.0f} s",
              file=sys.stderr, flush=True)
        worker = rig.worker_pid("worker")
        # The serving path first, as if the API, Redis and the reader had cores of their own
        # (README, "Running in production"): SCHED_RR for them, the worker and the broker on
        # the default scheduler. EDDY_FAULTS_SERVE_FIRST=0 leaves everything on the default.
        priority = 1 if os.environ.get("EDDY_FAULTS_SERVE_FIRST", "1") != "0" else 0
        served_first = bool(priority) and all([serve_first(priority, pid) for pid in (api_pid(rig), rig.redis_proc.pid)])
        events = (ledger_event(n, p["users"], p["items"]) for n in range(10**9))
        producer = Producer(api, events, rate=rate, batch=min(500, max(10, int(rate / 10))), keep=False)
        base = rig.stack.applied("interactions")
        producer.start()
        reader = Reader(api, p["users"], priority=priority if served_first else 0)
        reader.start()
        samples: list[tuple[float, int, float]] = []  # (t, lag, worker RSS MB)
        start = time.monotonic()
        while time.monotonic() - start < p["duration_s"]:
            time.sleep(1.0)
            try:
                lag = producer.accepted_count - (rig.stack.applied("interactions") - base)
            except redis_lib.RedisError:  # a slow moment of Redis: no sample
                continue
            samples.append((time.monotonic() - start, lag, rss_mb(worker)))
            if len(samples) % 60 == 0:
                print(f"sustained: {samples[-1][0]:.0f} s, lag {lag}, worker {samples[-1][2]:.0f} MB, "
                      f"runner {rss_mb(os.getpid()):.0f} MB", file=sys.stderr, flush=True)
        producer.halt()
        reader.halt()
        achieved = producer.accepted_count / (time.monotonic() - start)
        # Warm-up: the first fifth of the run (the recommender fills its per-user state).
        warm = [s for s in samples if s[0] >= p["duration_s"] / 5]
        tenth = max(1, len(warm) // 10)
        rss_growth = median([s[2] for s in warm[-tenth:]]) - median([s[2] for s in warm[:tenth]])
        lags = [s[1] for s in warm]
        lat = [d for t, d in reader.latencies if t - start >= p["duration_s"] / 5]
        if scale != "full":
            result.figures["lags"] = [s[1] for s in samples]
        result.figures.update(
            peak_per_s=round(peak), share=p["share"], serve_first=served_first,
            rate_per_s=round(rate), achieved_per_s=round(achieved),
            duration_s=round(p["duration_s"]), lag_mean=round(sum(lags) / len(lags)), lag_max=max(lags),
            lag_slope_per_s=round(slope([(s[0], s[1]) for s in warm]), 2),
            worker_rss_start_mb=round(median([s[2] for s in warm[:tenth]]), 1),
            worker_rss_growth_mb=round(rss_growth, 1), api_p50_ms=round(1000 * percentile(lat, 0.5), 1),
            api_p99_ms=round(1000 * percentile(lat, 0.99), 1), api_gets=len(lat), api_5xx=reader.server_errors,
            worker_exits=len(rig.exited()),
        )
        result.bounds.update(
            lag_slope_per_s=("<=", p["slope_share"] * rate), lag_max=("<=", 2 * rate), worker_rss_growth_mb=("<=", p["rss_mb"]),
            api_p99_ms=("<=", p["p99_ms"]), api_5xx=("==", 0), worker_exits=("==", 0),
            achieved_per_s=(">=", 0.9 * rate),
        )
        return result
    finally:
        if reader is not None:
            reader.close()
        rig.close()
