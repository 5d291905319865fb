"""Freshness and serving of recommendations, each beside its baseline in the same run.

- Freshness: while a steady load of simulated interactions is POSTed at ``--rate``/s,
  probes POST a like for a known user and time how long until that user's list, read
  through GET /api/recommendations, was computed after the like.
- Serving: GET /api/recommendations throughput (one uvicorn worker) beside a bare FastAPI
  endpoint returning a constant body, then p50/p99 latency at half of Eddy's peak rate.

Run by ``make bench`` after ``tests.benchmarks.run``; appends its section to the report.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson

from deploy.processes import Children, free_port, wait_for_port
from deploy.topics import ensure_topics
from schemas.settings import Settings
from tests.benchmarks.load import wrk
from tests.benchmarks.run import env_of, publish, simulated, start_backends


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cache_counts(metrics: str) -> dict[str, float]:
    """The API's read-cache outcomes (hit, miss, stale) from its /metrics text."""
    found = re.findall(r'eddy_api_read_cache_total\{outcome="(\w+)"\} ([\d.e+]+)', metrics)
    return {outcome: float(n) for outcome, n in found}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _post_steady(client: httpx.AsyncClient, url: str, events: list[dict], rate: float, stop: asyncio.Event) -> int:
    """POST events in batches of 10 at ``rate`` events/s until ``stop``."""
    sent, start, i = 0, time.perf_counter(), 0
    while not stop.is_set() and i < len(events):
        batch = events[i : i + 10]
        i += 10
        await client.post(url, content=orjson.dumps(batch), headers={"content-type": "application/json"})
        sent += len(batch)
        ahead = sent / rate - (time.perf_counter() - start)
        if ahead > 0:
            await asyncio.sleep(ahead)
    return sent


async def freshness(api: str, users: list[str], items: list[str], load: list[dict], rate: float, probes: int) -> list[float]:
    stop = asyncio.Event()
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=30) as client:
        loader = asyncio.create_task(_post_steady(client, api + "/api/events", load, rate, stop))
        await asyncio.sleep(2.0)
        rng = random.Random(1)
        for _ in range(probes):
            user, item = rng.choice(users), rng.choice(items)
            posted = time.time()
            await client.post(api + "/api/events", json={"type": "interaction", "user_id": user, "item_id": item, "action": "like"})
            while True:
                doc = (await client.get(api + "/api/recommendations", params={"user_id": user, "k": 10})).json()
                if doc["computed_at"] and doc["computed_at"] >= posted and not doc["cold_start"]:
                    latencies.append(time.time() - posted)
                    break
                if time.time() - posted > 30:
                    latencies.append(float("inf"))
                    break
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.1)
        stop.set()
        await loader
    return latencies


def wrk_peak(url: str, connections: int, seconds: float, paths: list[str] | None = None) -> float:
    """Requests/s of ``url`` (or of ``paths`` on its host, in turn) under wrk; any answer
    but 2xx fails the benchmark."""
    load = wrk(url, seconds, connections=connections, paths=paths)
    if load.failed:
        raise RuntimeError(f"{load.failed} failed requests under load at {url}")
    return load.ok_per_s


async def paced_latencies(base: str, paths: list[str], rate: float, seconds: float, connections: int = 8) -> list[float]:
    """Open-loop latencies at ``rate`` requests/s, cycling through ``paths``: request i is
    due at start + i/rate, and its latency runs from when it was due (so a stalled server
    is charged for the requests queued behind it). A raw keep-alive HTTP/1.1 client: a few
    tens of microseconds of client time per request."""
    parts = urlsplit(base)
    requests = [f"GET {p} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode() for p in paths]
    latencies: list[float] = []
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2

    async def connection(c: int) -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        for i in range(c, total, connections):
            due = start + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"not 200: {head[:60]!r}")
            length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - due)
        writer.close()

    await asyncio.gather(*(connection(c) for c in range(connections)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--append", type=Path, help="append the markdown section here")
    args = parser.parse_args()
    events, items = simulated("interaction", 40_000)
    with tempfile.TemporaryDirectory() as tmp:
        children = Children(log_dir=Path(tmp) / "logs")
        try:
            settings = start_backends(children, Path(tmp)).model_copy(
                update={"topic_prefix": f"f{uuid.uuid4().hex[:6]}."}
            )
            ensure_topics(settings)
            worker = children.start_eddy("worker", ["worker"], env_of(settings))
            port = free_port()
            proc = children.start_eddy("api", ["api", "--port", str(port)], env_of(settings))
            wait_for_port(port, proc=proc)
            api = f"http://127.0.0.1:{port}"
            while httpx.get(api + "/readyz").status_code != 200:
                time.sleep(0.1)
            import redis as redis_lib

            from schemas.keys import Keys

            r, keys = redis_lib.Redis.from_url(settings.redis_url), Keys(settings.redis_prefix)

            def settle(topic: str, n: int) -> None:
                deadline = time.monotonic() + 300
                while int(r.hget(keys.stats, f"applied:{settings.topic_prefix}{topic}") or 0) < n:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"worker did not apply {n} {topic}")
                    time.sleep(0.1)
                time.sleep(1.0)

            time.sleep(8)  # joined and idle
            rss_start = rss_bytes(worker.pid)
            for i in range(0, len(items), 500):
                httpx.post(api + "/api/events", json=items[i : i + 500], timeout=30)
            settle("items", len(items))
            rss_items = rss_bytes(worker.pid)
            warm = events[:10_000]
            for i in range(0, len(warm), 500):
                httpx.post(api + "/api/events", json=warm[i : i + 500], timeout=60)
            users = sorted({e["user_id"] for e in warm})
            settle("interactions", len(warm))  # probes start on a worker with no backlog
            rss_users = rss_bytes(worker.pid)
            sample = users[:500]
            per_user_redis = sum(
                (r.memory_usage(keys.recs(u)) or 0) + (r.memory_usage(keys.user_counts(u)) or 0) for u in sample
            ) / len(sample)
            fresh = asyncio.run(
                freshness(api, users, [i["item_id"] for i in items], events[10_000:], args.rate, args.probes)
            )
            bare_port = free_port()
            bare = children.spawn(
                "bare-api",
                [sys.executable, "-m", "uvicorn", "tests.benchmarks.bare_api:app", "--log-level", "warning",
                 "--no-access-log", "--port", str(bare_port)],
            )
            wait_for_port(bare_port, proc=bare)
            # The same API without the tracked copies: one Redis read per request.
            uncached_port = free_port()
            uncached = children.start_eddy("api-uncached", ["api", "--port", str(uncached_port)],
                                           {**env_of(settings), "EDDY_API_CACHE_TRACKING": "false"})
            wait_for_port(uncached_port, proc=uncached)
            time.sleep(2.0)  # the freshness load drained
            # Every user with a list, in turn: what many readers polling their lists look like.
            paths = [f"/api/recommendations?user_id={u}&k=10" for u in users]
            bare_rps = wrk_peak(f"http://127.0.0.1:{bare_port}/constant", 8, args.seconds)
            peak = wrk_peak(api + "/", 8, args.seconds, paths)
            uncached_rps = wrk_peak(f"http://127.0.0.1:{uncached_port}/", 8, args.seconds, paths)
            lat = asyncio.run(paced_latencies(api, paths, peak / 2, args.seconds))
            cache = cache_counts(httpx.get(api + "/metrics").text)
        finally:
            children.stop()
    finite = [x for x in fresh if x != float("inf")]
    section = "\n".join(
        [
            "",
            "## Freshness and serving of recommendations (`python -m tests.benchmarks.recs_bench`)",
            "",
            f"Freshness: {len(fresh)} probes while {args.rate:.0f} simulated interactions/s are POSTed "
            f"(10,000 simulated users, {len(items):,} items): time from POST of a like to that user's list, "
            "read through the API, having been computed after it.",
            "",
            "| freshness | p50 | p99 | timed out (30 s) |",
            "|---|---:|---:|---:|",
            f"| POST → fresh list readable | {statistics.median(finite) * 1000:,.0f} ms | "
            f"{quantile(fresh, 0.99) * 1000:,.0f} ms | {len(fresh) - len(finite)} |" if finite else "| none answered | | | |",
            "",
            f"Serving: peak requests/s from `wrk -t1 -c8 -d{args.seconds:.0f}s`, one uvicorn worker each, all on "
            f"uvloop and httptools. Eddy's requests go through the lists of all {len(users):,} users in turn "
            "(`k=10`), after the freshness run.",
            "",
            "| endpoint | requests/s | vs baseline |",
            "|---|---:|---:|",
            f"| bare FastAPI endpoint, constant body (baseline) | {bare_rps:,.0f} | 100% |",
            f"| **Eddy** GET /api/recommendations: copies Redis tracks for the API (the default) | **{peak:,.0f}** | "
            f"**{peak / bare_rps:.0%}** |",
            f"| Eddy GET /api/recommendations, `EDDY_API_CACHE_TRACKING=false`: one Redis read per request | "
            f"{uncached_rps:,.0f} | {uncached_rps / bare_rps:.0%} |",
            "",
            f"The default API's reads over the whole benchmark: {cache.get('hit', 0):,.0f} served from a tracked copy, "
            f"{cache.get('miss', 0):,.0f} read from Redis (the first read of each list, and each read after the worker "
            "rewrote it during the freshness run).",
            "",
            f"At half of Eddy's peak ({peak / 2:,.0f}/s, same users in turn): p50 {statistics.median(lat) * 1000:.1f} ms, "
            f"p99 {quantile(lat, 0.99) * 1000:.1f} ms over {len(lat):,} requests (open loop: each request's latency runs "
            "from when it was due; a raw keep-alive client on 8 connections, same machine).",
            "",
            "Memory: Redis holds "
            f"{per_user_redis / 1024:.1f} KiB per user (ready list of {Settings().recs_k} items with their fields, "
            "plus the counters behind the profile; `MEMORY USAGE` over 500 users). The worker's resident memory "
            f"grew {(rss_items - rss_start) / max(1, len(items)) / 1024:.1f} KiB per item while the catalogue loaded and "
            f"{(rss_users - rss_items) / max(1, len(users)) / 1024:.1f} KiB per user while the {len(users):,} users of "
            "10,000 interactions were learned (RSS from /proc; it includes allocator slack).",
            "",
            "Against issue 3's goals: freshness p99 ≤ 100 ms at 500 interactions/s — "
            f"{'met' if finite and quantile(fresh, 0.99) <= 0.1 else 'not met'}; GET ≥ 70% of the bare endpoint — "
            f"{'met' if peak >= 0.7 * bare_rps else 'not met'}; p99 ≤ 10 ms at half the peak — "
            f"{'met' if quantile(lat, 0.99) <= 0.01 else 'not met'}.",
            "",
        ]
    )
    publish(section, args.append)


if __name__ == "__main__":
    main()
