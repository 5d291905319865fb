"""Bids scored and outcomes learned per worker, beside a bare Faust drain of the same topic.

Simulated bids, then their outcomes (envelopes, as the API writes them), on one topic.
One Eddy worker scores every bid (features, model, Redis) and then learns from every
outcome with the features stored at placement; a bare Faust agent that only decodes
drains the same topic as the baseline. The worker's resident memory is read before the
bids and once they are all pending, for the memory per pending bid.

Run by ``make bench``; appends its section to the report.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import redis

from deploy.processes import Children
from deploy.simulator import SimConfig, Simulator
from deploy.topics import ensure_topics
from schemas.keys import Keys
from tests.benchmarks.recs_bench import rss_bytes
from tests.benchmarks.run import bare_drain, env_of, fill, publish, start_backends


def simulated_bids(n: int) -> tuple[list[dict], list[dict]]:
    sim = Simulator(SimConfig(seed=13, weight_interaction=0.0, weight_item=0.0, weight_scrape=0.0, weight_bid=1.0))
    bids, outcomes = [], []
    for doc in sim.events():
        (bids if doc["type"] == "bid" else outcomes).append(doc)
        if len(bids) >= n:
            break
    placed = {b["bid_id"] for b in bids}
    return bids, [o for o in outcomes if o["bid_id"] in placed]


def idle_rss(children: Children, base) -> int:  # noqa: ANN001 - Settings
    """Resident memory of a worker that has joined its group but has nothing to read."""
    empty = base.model_copy(update={"topic_prefix": f"i{uuid.uuid4().hex[:6]}.",
                                    "redis_prefix": f"i{uuid.uuid4().hex[:6]}:"})
    ensure_topics(empty)
    proc = children.start_eddy("idle", ["worker"], env_of(empty))
    r = redis.Redis.from_url(empty.redis_url)
    deadline = time.monotonic() + 60
    while not r.hlen(Keys(empty.redis_prefix).workers):
        if time.monotonic() > deadline:
            raise TimeoutError("idle worker got no partitions")
        time.sleep(0.1)
    time.sleep(1.0)
    rss = rss_bytes(proc.pid)
    children.stop_one("idle")
    return rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bids", type=int, default=20_000)
    parser.add_argument("--append", type=Path, help="append the markdown section here")
    args = parser.parse_args()
    bids, outcomes = simulated_bids(args.bids)
    # Every outcome after every bid: first a scoring phase, then a learning phase.
    late = [o | {"ts": bids[-1]["ts"] + 1.0 + i * 1e-3} for i, o in enumerate(outcomes)]
    with tempfile.TemporaryDirectory() as tmp:
        children = Children(log_dir=Path(tmp) / "logs")
        try:
            base = start_backends(children, Path(tmp))
            settings = base.model_copy(update={"topic_prefix": f"b{uuid.uuid4().hex[:6]}.",
                                               "redis_prefix": f"b{uuid.uuid4().hex[:6]}:"})
            topic = fill(settings, bids + late, envelopes=True, name="bids")
            total = len(bids) + len(late)
            bare = bare_drain(children, settings, topic, total, "envelope")
            r = redis.Redis.from_url(settings.redis_url)
            stat = (Keys(settings.redis_prefix).stats, f"applied:{topic}")
            env = env_of(settings) | {"EDDY_BID_EXPIRY_S": str(400 * 86400)}
            idle = idle_rss(children, base)
            proc = children.start_eddy("worker", ["worker"], env)
            marks: dict[str, float] = {}
            peak_pending = 0
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                count = int(r.hget(*stat) or 0)
                now = time.perf_counter()
                if "start" not in marks and count > 0:
                    marks["start"], marks["c0"] = now, count
                if "bids" not in marks and count >= len(bids):
                    marks["bids"], marks["c1"] = now, count
                    peak_pending = rss_bytes(proc.pid)
                if count >= total:
                    marks["end"] = now
                    break
                time.sleep(0.002)
            else:
                raise TimeoutError(f"worker applied {count} of {total}")
        finally:
            children.stop()
    scored = (marks["c1"] - marks["c0"]) / (marks["bids"] - marks["start"])
    learned = (total - marks["c1"]) / (marks["end"] - marks["bids"])
    per_pending = (peak_pending - idle) / len(bids)
    section = f"""
## Bids: scored on arrival, learned from delayed outcomes

`python -m tests.benchmarks.bids_bench --bids {args.bids}`: {len(bids):,} simulated bids, then their
{len(late):,} outcomes, in envelopes on one topic; one worker; the bare agent decodes the same topic.

| consumer | events/s | vs bare |
|---|---:|---:|
| bare Faust agent, decode only, same envelope topic (baseline) | {bare:,.0f} | 100% |
| **Eddy**, bids: features, score, store features and score in Redis | **{scored:,.0f}** | **{scored / bare:.0%}** |
| **Eddy**, outcomes: learn from the stored features, validate, update Redis | **{learned:,.0f}** | **{learned / bare:.0%}** |

Worker memory with {len(bids):,} bids pending: {per_pending / 1024:.1f} KiB per pending bid
(resident memory {idle / 2**20:.0f} MiB idle, {peak_pending / 2**20:.0f} MiB with every bid pending;
the features of each bid, its profile's and job's history and the model's new words).
Pending bids are bounded by `EDDY_BID_EXPIRY_S` (30 days by default): at most the bids
placed in that window.
"""
    publish(section, args.append)


if __name__ == "__main__":
    main()
