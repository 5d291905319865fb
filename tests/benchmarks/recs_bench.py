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
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson

from deploy.processes import Children, free_port, wait_for_port
from deploy.topics import ensure_topics
from schemas.settings import Settings
from tests.benchmarks.run import env_of, publish, simulated, start_backends


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


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


async def _get_load(url: str, concurrency: int, seconds: float, rate: float | None = None) -> tuple[int, list[float]]:
    ok, latencies = 0, []
    stop_at = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one(i: int) -> None:
            nonlocal ok
            n = 0
            started = time.perf_counter()
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                resp = await client.get(url)
                latencies.append(time.perf_counter() - t)
                ok += resp.status_code == 200
                n += 1
                if rate:
                    ahead = n / (rate / concurrency) - (time.perf_counter() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        await asyncio.gather(*(one(i) for i in range(concurrency)))
    return ok, latencies


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
            user = users[0]
            bare_port = free_port()
            bare = children.spawn(
                "bare-api",
                [sys.executable, "-m", "uvicorn", "tests.benchmarks.bare_api:app", "--log-level", "warning",
                 "--no-access-log", "--port", str(bare_port)],
            )
            wait_for_port(bare_port, proc=bare)
            eddy_ok, _ = asyncio.run(_get_load(f"{api}/api/recommendations?user_id={user}&k=10", 8, args.seconds))
            bare_ok, _ = asyncio.run(_get_load(f"http://127.0.0.1:{bare_port}/constant", 8, args.seconds))
            peak = eddy_ok / args.seconds
            _, lat = asyncio.run(_get_load(f"{api}/api/recommendations?user_id={user}&k=10", 8, args.seconds, rate=peak / 2))
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
            f"Serving: GET, 8 connections, {args.seconds:.0f} s, one uvicorn worker.",
            "",
            "| endpoint | requests/s |",
            "|---|---:|",
            f"| bare FastAPI endpoint, constant body (baseline) | {bare_ok / args.seconds:,.0f} |",
            f"| **Eddy** GET /api/recommendations (one Redis read) | **{peak:,.0f}** ({peak / (bare_ok / args.seconds):.0%}) |",
            "",
            f"At half of Eddy's peak ({peak / 2:,.0f}/s): p50 {statistics.median(lat) * 1000:.1f} ms, "
            f"p99 {quantile(lat, 0.99) * 1000:.1f} ms (measured by the client, same machine).",
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
            f"{'met' if peak >= 0.7 * bare_ok / args.seconds else 'not met'}; p99 ≤ 10 ms at half the peak — "
            f"{'met' if quantile(lat, 0.99) <= 0.01 else 'not met'}. The worker re-ranks each touched user in pure "
            "Python; the GET figures come from a Python client on the same two cores.",
            "",
        ]
    )
    publish(section, args.append)


if __name__ == "__main__":
    main()
