"""``make bench``: Eddy's throughput figures, each beside a baseline measured in the same run.

- Worker ingest: events/s one worker consumes, validates, dedupes and writes to Redis,
  beside a bare Faust agent that only decodes the same topic (per message, and batched
  with ``take_events``).
- API ingest: events/s accepted by POST /api/events (batches of 100 and of 1), beside a
  bare FastAPI endpoint that reads the body and answers a constant, under the same
  uvicorn and the same load generator.

Everything runs on this machine: the broker, Redis, the worker, uvicorn and the load
generator share its cores, which the figures include.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson
import redis
from kafka import KafkaProducer

from deploy.processes import Children, free_port, wait_for_port
from deploy.simulator import SimConfig, Simulator
from deploy.topics import ensure_topics
from schemas.envelope import pack
from schemas.events import validate_event
from schemas.keys import Keys
from schemas.settings import Settings
from schemas.topics import key_of
from tests.benchmarks.load import wrk

ROOT = Path(__file__).resolve().parents[2]


def start_backends(children: Children, data_dir: Path) -> Settings:
    """A broker and a Redis on free loopback ports; settings that point at them."""
    broker, redis_port = free_port(), free_port()
    children.start_broker(broker)
    children.start_redis(redis_port, data_dir / "redis")
    return Settings(
        kafka_bootstrap=f"127.0.0.1:{broker}",
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        session_timeout_s=6.0,  # Tansu completes a group join after half of it
    )


def publish(section: str, append: Path | None) -> None:
    """Print a benchmark's markdown section and append it to the report when asked."""
    print(section)
    if append:
        with append.open("a") as fh:
            fh.write(section)


def simulated(kind: str, n: int) -> tuple[list[dict], list[dict]]:
    """n simulated events of one type (10,000 users, 10,000 live items), and the items
    they refer to."""
    # Scrape attempts need no catalogue: a small world generates them much faster.
    big = kind != "scrape_attempt"
    sim = Simulator(SimConfig(n_users=10_000, n_items=10_000, seed=11) if big else SimConfig(seed=11))
    out, items = [], []
    for doc in sim.events():
        if doc["type"] == "item":
            items.append(doc)
        elif doc["type"] == kind:
            out.append(doc)
            if len(out) == n:
                return out, items
    raise AssertionError("unreachable")


def interactions(n: int) -> list[dict]:
    return simulated("interaction", n)[0]


def env_of(settings: Settings) -> dict[str, str]:
    return {
        "EDDY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "EDDY_REDIS_URL": settings.redis_url,
        "EDDY_TOPIC_PREFIX": settings.topic_prefix,
        "EDDY_REDIS_PREFIX": settings.redis_prefix,
        "EDDY_CONSUMER_GROUP": settings.consumer_group,
        "EDDY_SESSION_TIMEOUT_S": str(settings.session_timeout_s),
        "EDDY_PARTITIONS": str(settings.partitions),
        "EDDY_WORKER_METRICS_PORT": "0",
        "EDDY_LOG_LEVEL": "warning",
    }


def wait_line(log: Path, proc: subprocess.Popen, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists():
            for line in log.read_text(errors="replace").splitlines():
                at = line.find('{"events"')  # the line may start with terminal escapes
                if at >= 0:
                    return json.loads(line[at:])
        if proc.poll() is not None:
            raise RuntimeError(f"{log.name} exited early; see {log}")
        time.sleep(0.05)
    raise TimeoutError(f"no result in {log}")


def fill(settings: Settings, events: list[dict], *, envelopes: bool, batch: int = 100, name: str = "interactions") -> str:
    """Write the events to a fresh topic, as single records or as the API would."""
    ensure_topics(settings)
    topic = settings.topic_prefix + name
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20, batch_size=256_000)
    encoded = [(key_of(validate_event(doc)), orjson.dumps(doc)) for doc in events]
    if envelopes:
        partitions = list(range(settings.partitions))
        for i in range(0, len(encoded), batch):
            for partition, record in pack(encoded[i : i + batch], partitions):
                producer.send(topic, value=record, partition=partition)
    else:
        for key, value in encoded:
            producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
    return topic


def bare_drain(children: Children, settings: Settings, topic: str, n: int, mode: str) -> float:
    s = settings.model_copy(update={"consumer_group": f"bare-{mode}-{uuid.uuid4().hex[:6]}"})
    name = f"bare-{mode}-{s.consumer_group[-6:]}"  # a fresh log: results are read from it
    proc = children.spawn(name, [sys.executable, "-m", "tests.benchmarks.bare_drain", topic, str(n), mode], env_of(s))
    out = wait_line(children.log_dir / f"{name}.log", proc, 600)
    children.stop_one(name)
    return out["events"] / out["seconds"]


def eddy_drain(children: Children, settings: Settings, topic: str, n: int) -> float:
    s = settings.model_copy(update={"consumer_group": f"eddy-{uuid.uuid4().hex[:6]}", "redis_prefix": f"b{uuid.uuid4().hex[:6]}:"})
    r = redis.Redis.from_url(s.redis_url)
    stat = (Keys(s.redis_prefix).stats, f"applied:{topic}")
    children.start_eddy("worker", ["worker"], env_of(s))
    t0 = c0 = None
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            count = int(r.hget(*stat) or 0)
            now = time.perf_counter()
            if t0 is None and count > 0:
                t0, c0 = now, count
            if count >= n:
                return (count - c0) / (now - t0)
            time.sleep(0.002)
        raise TimeoutError(f"worker applied {count} of {n}")
    finally:
        children.stop_one("worker")


def bench_worker(children: Children, base: Settings, n: int) -> dict[str, float]:
    """The backbone on scrape attempts: decode, validate, dedupe, strategy selection per
    domain, and the domain's state and read model written per batch."""
    events, _ = simulated("scrape_attempt", n)
    single = base.model_copy(update={"topic_prefix": f"s{uuid.uuid4().hex[:6]}."})
    enveloped = base.model_copy(update={"topic_prefix": f"e{uuid.uuid4().hex[:6]}."})
    single_topic = fill(single, events, envelopes=False, name="scrape-attempts")
    envelope_topic = fill(enveloped, events, envelopes=True, name="scrape-attempts")
    return {
        "bare_each": bare_drain(children, single, single_topic, n, "each"),
        "bare_take": bare_drain(children, single, single_topic, n, "take"),
        "bare_envelope": bare_drain(children, enveloped, envelope_topic, n, "envelope"),
        "eddy_single": eddy_drain(children, single, single_topic, n),
        "eddy_envelope": eddy_drain(children, enveloped, envelope_topic, n),
    }


def bench_recs(children: Children, base: Settings, n: int) -> dict[str, float]:
    """Interactions turned into fresh lists: learn, score live, rank every touched user."""
    events, items = simulated("interaction", n)
    settings = base.model_copy(update={"topic_prefix": f"r{uuid.uuid4().hex[:6]}."})
    single = base.model_copy(update={"topic_prefix": f"q{uuid.uuid4().hex[:6]}."})
    fill(settings, items, envelopes=True, name="items")
    topic = fill(settings, events, envelopes=True)
    single_topic = fill(single, events, envelopes=False)
    return {
        "bare_each": bare_drain(children, single, single_topic, n, "each"),
        "bare_envelope": bare_drain(children, settings, topic, n, "envelope"),
        "eddy": eddy_drain(children, settings, topic, n),
        "items": len(items),
    }


def bench_api(children: Children, base: Settings, seconds: float) -> dict[str, float]:
    settings = base.model_copy(update={"topic_prefix": f"a{uuid.uuid4().hex[:6]}."})
    ensure_topics(settings)
    events = interactions(20_000)
    for doc in events:
        doc.pop("event_id")  # let the API assign ULIDs, as for most producers
    results: dict[str, float] = {}
    servers = {
        "eddy": ["-m", "deploy.cli", "api", "--port"],
        "bare": ["-m", "uvicorn", "tests.benchmarks.bare_api:app", "--log-level", "warning", "--no-access-log", "--port"],
    }
    for name, args in servers.items():
        port = free_port()
        proc = children.spawn(f"api-{name}", [sys.executable, *args, str(port)], env_of(settings))
        wait_for_port(port, proc=proc)
        if name == "eddy":
            while httpx.get(f"http://127.0.0.1:{port}/readyz").status_code != 200:
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/api/events"
        for batch in (100, 1):
            bodies = [orjson.dumps(events[i : i + batch]) for i in range(0, 2_000 * batch if batch == 1 else len(events), batch)]
            bodies = [b for b in bodies if b != b"[]"]
            wrk(url, 1.0, bodies=bodies)  # warm-up
            load = wrk(url, seconds, bodies=bodies)
            results[f"{name}_batch{batch}"] = load.ok_per_s * batch
        children.stop_one(f"api-{name}")
    return results


def render(
    worker: dict[str, float], recs: dict[str, float], api: dict[str, float], n: int, n_recs: int, seconds: float
) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    ceiling = worker["bare_each"]

    def row(label: str, value: float) -> str:
        return f"| {label} | {value:,.0f} | {value / ceiling:.0%} |"

    lines = [
        "# Benchmarks",
        "",
        f"Latest run: {when}, `make bench` (`python -m tests.benchmarks.run --write docs/benchmarks.md`,",
        "then `recs_bench`, `scraping_bench`, `bids_bench` and `replay_bench` with `--append docs/benchmarks.md`),",
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}. Broker (Tansu, memory), Redis,",
        "worker, uvicorn and the load generator all share the same machine.",
        "",
        f"## Worker ingest ({n:,} simulated scrape attempts, one worker, {Settings().partitions} partitions)",
        "",
        "Two copies of the same events: one record per event, and envelopes as `POST /api/events`",
        "writes them (batches of 100, one record per partition). Events/s are counted between the",
        "first and the last event applied (Eddy: read from the `applied` counter written in the same",
        "atomic call as the effects) or decoded (bare agents).",
        "",
        "| consumer | events/s | vs bare per-record drain |",
        "|---|---:|---:|",
        row("bare Faust agent, decode only, `async for` per record (baseline: the per-record ceiling)", ceiling),
        row("bare Faust agent, decode only, `take_events` batches, same topic", worker["bare_take"]),
        row("**Eddy worker**, one record per event: decode, validate, dedupe, select strategies, write Redis", worker["eddy_single"]),
        row("bare Faust agent, decode only, envelope topic", worker["bare_envelope"]),
        row("**Eddy worker**, envelopes (what the API writes)", worker["eddy_envelope"]),
        "",
        f"Same-topic ratios: Eddy / bare on one-record-per-event = {worker['eddy_single'] / ceiling:.0%}; "
        f"Eddy / bare on envelopes = {worker['eddy_envelope'] / worker['bare_envelope']:.0%}.",
        "",
        f"## Interactions to fresh lists ({n_recs:,} simulated interactions, 10,000 users, {recs['items']:,} items)",
        "",
        "The worker learns each interaction, scores it test-then-train for the live quality",
        "figures, and recomputes and writes the list of every user a batch touched. The",
        "interactions are in envelopes, as the API writes them; the baseline is the bare Faust",
        "drain (an agent that only decodes, one record per event: Faust's per-message ceiling),",
        "and the same bare agent on the envelopes is shown too.",
        "",
        "| consumer | interactions/s | vs bare Faust drain |",
        "|---|---:|---:|",
        f"| bare Faust agent, decode only, one record per event (baseline) | {recs['bare_each']:,.0f} | 100% |",
        f"| bare Faust agent, decode only, the same envelopes | {recs['bare_envelope']:,.0f} | "
        f"{recs['bare_envelope'] / recs['bare_each']:.0%} |",
        f"| **Eddy worker** on the envelopes: learn, score, publish fresh lists | **{recs['eddy']:,.0f}** | "
        f"**{recs['eddy'] / recs['bare_each']:.0%}** |",
        "",
        f"Eddy against the bare agent on the same envelopes: {recs['eddy'] / recs['bare_envelope']:.1%}.",
        "",
        f"## API ingest (POST /api/events, `wrk -t1 -c8 -d{seconds:.0f}s` cycling through the bodies, one uvicorn worker)",
        "",
        "| endpoint | batch of 100: events/s | batch of 1: events/s |",
        "|---|---:|---:|",
        f"| bare FastAPI endpoint, reads body, constant answer (baseline) | {api['bare_batch100']:,.0f} | {api['bare_batch1']:,.0f} |",
        f"| **Eddy**: validate, assign ids, produce envelopes to Kafka, wait for acks | **{api['eddy_batch100']:,.0f}** | **{api['eddy_batch1']:,.0f}** |",
        f"| Eddy / baseline | {api['eddy_batch100'] / api['bare_batch100']:.0%} | {api['eddy_batch1'] / api['bare_batch1']:.0%} |",
        "",
        "## Reading these figures",
        "",
        "- The load generator is wrk (C, one thread) on the same two cores; only 2xx answers count.",
        "- Eddy's API figure includes waiting for Kafka's acks (`acks=all`) on every request, so a 202",
        "  always means the events are in the log.",
        "- Worker ingest: the bar is 70% of the bare drain. One record per event reaches "
        f"{worker['eddy_single'] / ceiling:.0%}; with the envelopes the API writes, Eddy applies "
        f"{worker['eddy_envelope'] / ceiling:.1f}x the per-record ceiling, but only "
        f"{worker['eddy_envelope'] / worker['bare_envelope']:.0%} of what a bare agent decodes from the same envelope topic.",
        "- Interactions to fresh lists: each event is validated, deduplicated and learned and, once",
        "  per batch, the list of 50 of each user the batch touched is re-ranked and written; the",
        "  bare agents only decode JSON. On envelopes a bare agent pays Faust's per-message cost once",
        "  per ~100 events, which no worker that learns and ranks can approach.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rec-events", type=int, default=20_000)
    parser.add_argument("--write", type=Path, help="write the markdown report here")
    parser.add_argument("--only", choices=["worker", "recs", "api"], help="run one part (report not written)")
    parser.add_argument("--logs", type=Path, default=Path(".eddy/bench"), help="child process logs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        children = Children(log_dir=args.logs)
        try:
            base = start_backends(children, Path(tmp))
            if args.only in (None, "worker"):
                worker = bench_worker(children, base, args.events)
                print("worker", worker, flush=True)
            if args.only in (None, "recs"):
                recs = bench_recs(children, base, args.rec_events)
                print("recs", recs, flush=True)
            if args.only in (None, "api"):
                api = bench_api(children, base, args.seconds)
                print("api", api, flush=True)
            if args.only:
                return
        finally:
            children.stop()
    report = render(worker, recs, api, args.events, args.rec_events, args.seconds)
    print(report)
    if args.write:
        args.write.write_text(report)


if __name__ == "__main__":
    main()
