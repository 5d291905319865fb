"""Replay benchmark: rebuild the recommender from a 100,000-event log, beside the live path.

A simulated stream (items, interactions, declared interests, deletions; 10,000 users and
10,000 items) is POSTed to the API in event-time order, items a chunk ahead, and learned
live by one worker; then ``eddy replay``'s
code rebuilds the recommender from the Kafka log in this process. Reported: the live
path's events/s (POST to applied), the replay's events/s (learning, and reading plus
learning), and the live and replayed HR@10 / NDCG@10 on the same stable sample of targets.

    python -m tests.benchmarks.replay_bench [--events 100000] [--append docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson
import redis as redis_lib

from deploy.processes import Children, free_port, wait_for_port
from deploy.replay import replay_recommender
from deploy.simulator import SimConfig, Simulator
from deploy.topics import ensure_topics
from schemas.keys import Keys
from tests.benchmarks.run import env_of, publish, start_backends

KINDS = ("item", "interaction", "preference", "user_deleted")
AHEAD = 5


def stream(n: int) -> list[dict]:
    """n events of the recommender's topics in event-time order, items among them as they
    are published."""
    sim = Simulator(SimConfig(n_users=10_000, n_items=10_000, seed=11))
    out = []
    for doc in sim.events():
        if doc["type"] in KINDS:
            out.append(doc)
            if len(out) == n:
                return out
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=2_000.0, help="events/s POSTed on the live path")
    parser.add_argument("--append", type=Path, help="append the markdown section here")
    args = parser.parse_args()
    events = stream(args.events)
    items = [e for e in events if e["type"] == "item"]
    rest = [e for e in events if e["type"] != "item"]
    with tempfile.TemporaryDirectory() as tmp:
        children = Children(log_dir=Path(tmp) / "logs")
        try:
            settings = start_backends(children, Path(tmp)).model_copy(update={
                "topic_prefix": f"r{uuid.uuid4().hex[:6]}.", "snapshot_dir": str(Path(tmp) / "snapshots"),
            })
            ensure_topics(settings)
            env = env_of(settings) | {"EDDY_SNAPSHOT_DIR": settings.snapshot_dir}
            children.start_eddy("worker", ["worker"], env)
            port = free_port()
            proc = children.start_eddy("api", ["api", "--port", str(port)], env)
            wait_for_port(port, proc=proc)
            api = f"http://127.0.0.1:{port}"
            while httpx.get(api + "/readyz").status_code != 200:
                time.sleep(0.1)
            r, keys = redis_lib.Redis.from_url(settings.redis_url), Keys(settings.redis_prefix)

            def applied(topic: str) -> int:
                return int(r.hget(keys.stats, f"applied:{settings.topic_prefix}{topic}") or 0)

            def settle(topic: str, n: int, timeout_s: float = 900) -> None:
                deadline = time.monotonic() + timeout_s
                while applied(topic) < n:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"worker applied {applied(topic)} of {n} {topic}")
                    time.sleep(0.05)

            time.sleep(8)  # joined and idle
            started = time.perf_counter()
            # Items go five chunks ahead of the interactions around them, as a site publishes
            # an item before anyone can click it (they are servable from their event time
            # only): the replay is measured, not the race between the two topics.
            chunks = [events[i : i + 1000] for i in range(0, len(events), 1000)]
            ahead = [[e for e in c if e["type"] == "item"] for c in chunks] + [[]] * AHEAD
            for n, chunk in enumerate([[]] * AHEAD + chunks):
                for body in (ahead[n], [e for e in chunk if e["type"] != "item"]):
                    if body:
                        httpx.post(api + "/api/events", json=body, timeout=60).raise_for_status()
                # Paced below the worker's peak, so it keeps up with both topics as it does in
                # steady operation: saturated, its catalogue lags its interactions (measured
                # below) and live misses targets no replay would.
                behind = (n + 1) * 1000 / args.rate - (time.perf_counter() - started)
                if behind > 0:
                    time.sleep(behind)
            settle("items", len(items))
            settle("interactions", len(rest))
            live_s = time.perf_counter() - started
            time.sleep(2.0)  # the registry is written with each batch; let the last one land
            unknown = sum(orjson.loads(doc).get("targets_on_unknown_items", 0)
                          for field, doc in r.hgetall(keys.models).items() if field.startswith(b"recs:"))
            report = asyncio.run(replay_recommender(settings, start="earliest", name="bench"))
        finally:
            children.stop()

    serving = report["serving"] or {}
    total_s = report["read_s"] + report["learn_s"]

    def rel(a: float | None, b: float | None) -> str:
        return f"{abs(a - b) / b:.2%}" if a is not None and b else "n/a"

    section = (
        f"\n## Replay (`python -m tests.benchmarks.replay_bench`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
        f"{report['events']:,} events in the log ({report['items']:,} items, {report['interactions']:,} "
        f"interactions, declared interests and deletions; 10,000 simulated users), "
        f"{settings.partitions} partitions, live test-then-train share {settings.live_eval_share}.\n\n"
        "| path | events/s | HR@10 | NDCG@10 | targets |\n|---|---|---|---|---|\n"
        f"| live: POST at {args.rate:,.0f}/s → one worker → Redis (baseline path) | {len(events) / live_s:,.0f} | "
        f"{serving.get('hr_at_10') or 0:.4f} | {serving.get('ndcg_at_10') or 0:.4f} | {serving.get('targets', 0):,} |\n"
        f"| replay: learning (test-then-train) | {report['events_per_s']:,.0f} | "
        f"{report['metrics']['hr_at_10'] or 0:.4f} | {report['metrics']['ndcg_at_10'] or 0:.4f} | "
        f"{report['metrics']['targets']:,} |\n"
        f"| replay: reading the log + learning | {report['events'] / total_s:,.0f} | | | |\n"
        f"| popularity, replayed | | {report['baseline']['hr_at_10'] or 0:.4f} | "
        f"{report['baseline']['ndcg_at_10'] or 0:.4f} | {report['baseline']['targets']:,} |\n\n"
        f"Replayed against live: HR@10 differs by {rel(report['metrics']['hr_at_10'], serving.get('hr_at_10'))}, "
        f"NDCG@10 by {rel(report['metrics']['ndcg_at_10'], serving.get('ndcg_at_10'))} (relative; goal within 2%). "
        f"Reading the log took {report['read_s']:.1f} s, learning {report['learn_s']:.1f} s; "
        f"{report['skipped_deleted']:,} events of users deleted later were left out. Live targets on "
        f"items the worker's catalogue did not hold yet (certain misses the replay does not have): {unknown}. "
        f"Goal: replay at 20,000 events/s or more.\n"
    )
    publish(section, args.append)
    print(orjson.dumps({k: v for k, v in report.items() if k != "params"}).decode())


if __name__ == "__main__":
    main()
