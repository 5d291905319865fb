"""What every trial shares: its own broker, Redis and Eddy processes, a paced producer
that remembers what Kafka accepted, the ground truth of a ledger of interactions, and the
result type with its bounds.

Each trial starts a fresh Tansu broker and redis-server on free loopback ports (the same
binaries and the same :class:`deploy.processes.Children` the integration fixtures use), so
killing or pausing one of them never touches another trial or the machine's own Redis.
"""

from __future__ import annotations

import operator
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis as redis_lib

from deploy.processes import Children, free_port
from schemas.keys import Keys
from tests.conftest import Stack

#: Actions of the ledger's interactions: none needs a value, so every one is valid.
LEDGER_ACTIONS = ("click", "view", "like", "save", "impression")

_OPS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq, "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
}


@dataclass
class TrialResult:
    """A trial's figures, the bound each checked figure must meet, and whether all did."""

    name: str
    scale: str
    figures: dict[str, object] = field(default_factory=dict)
    bounds: dict[str, tuple[str, object]] = field(default_factory=dict)

    def misses(self) -> list[str]:
        out = []
        for name, (op, bound) in self.bounds.items():
            value = self.figures.get(name)
            if value is None or not _OPS[op](value, bound):
                out.append(f"{name}={value} (bound {op} {bound})")
        return out

    @property
    def ok(self) -> bool:
        return not self.misses()

    def line(self) -> str:
        """The one line of figures the runner prints."""
        parts = [f"{k}={_fmt(v)}" for k, v in self.figures.items()]
        verdict = "PASS" if self.ok else "FAIL " + "; ".join(self.misses())
        return f"{self.name} [{self.scale}] {' '.join(parts)} -> {verdict}"


def _fmt(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


class Rig:
    """One trial's whole deployment: broker and Redis of its own, then Eddy on them.

    ``stack`` is the integration tests' :class:`~tests.conftest.Stack` (topics, worker and
    API processes, Redis helpers) pointed at this rig's broker and Redis.
    """

    def __init__(self, name: str, *, redis_aof: bool = False, session_timeout_s: float = 6.0,
                 **settings: object) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"eddy-{name}-"))
        self.infra = Children(log_dir=self.dir / "logs")
        self.broker_port, self.redis_port = free_port(), free_port()
        self.redis_aof = redis_aof
        self.broker = self.infra.start_broker(self.broker_port)
        self.redis_proc = self.infra.start_redis(self.redis_port, self.dir / "redis", appendonly=redis_aof)
        self.stack = Stack(f"127.0.0.1:{self.broker_port}", f"redis://127.0.0.1:{self.redis_port}/0",
                           self.dir / "logs", **settings)
        # A shorter session lets a killed worker's partitions move sooner (short trials); the
        # rebalance timeout follows it (default 10 s).
        self.stack.settings = self.stack.settings.model_copy(update={"session_timeout_s": session_timeout_s})
        self.stack.extra_env = {"rebalance_timeout_s": max(3.0, session_timeout_s)}
        self.stack.children.cwd = self.dir
        self.keys: Keys = self.stack.keys

    # -- infrastructure faults --------------------------------------------------------

    def kill_redis(self) -> None:
        os.kill(self.redis_proc.pid, signal.SIGKILL)
        self.redis_proc.wait()
        self.infra.procs.remove(("redis", self.redis_proc))

    def start_redis(self) -> None:
        """Start redis-server again on the same port and data directory (AOF replayed)."""
        self.redis_proc = self.infra.start_redis(self.redis_port, self.dir / "redis", appendonly=self.redis_aof)

    def pause_broker(self) -> None:
        os.kill(self.broker.pid, signal.SIGSTOP)

    def resume_broker(self) -> None:
        os.kill(self.broker.pid, signal.SIGCONT)

    # -- worker processes ---------------------------------------------------------------

    def kill9_worker(self, name: str) -> None:
        for entry in [e for e in self.stack.children.procs if e[0] == name]:
            os.kill(entry[1].pid, signal.SIGKILL)
            entry[1].wait()
            self.stack.children.procs.remove(entry)

    def worker_pid(self, name: str) -> int:
        return next(p.pid for n, p in self.stack.children.procs if n == name)

    def exited(self) -> list[str]:
        """Eddy processes that died on their own (not killed by the trial)."""
        return [n for n, p in self.stack.children.procs if p.poll() is not None]

    def close(self) -> None:
        """Kill everything at once: the trial has its figures, a graceful stop adds seconds."""
        for _, proc in [*self.stack.children.procs, *self.infra.procs]:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
        self.stack.children.procs.clear()
        self.infra.procs.clear()
        self.stack.close()
        self.stack.redis.close()
        if os.environ.get("EDDY_FAULTS_KEEP") is None:
            shutil.rmtree(self.dir, ignore_errors=True)


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS from /proc), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the ledger ------------------------------------------------------------------------------


def ledger_event(seq: int, users: int, items: int) -> dict:
    """Interaction number ``seq``: its id, user, item and action all follow from ``seq``."""
    return {"type": "interaction", "event_id": f"L{seq}", "ts": 1_700_000_000 + seq / 1000,
            "user_id": f"u{seq % users}", "item_id": f"i{(seq * 7) % items}",
            "action": LEDGER_ACTIONS[seq % len(LEDGER_ACTIONS)]}


def catalogue(items: int) -> list[dict]:
    """Items the ledger's interactions point at, so the recommender has real work."""
    return [{"type": "item", "event_id": f"item-{n}", "item_id": f"i{n}", "title": f"Item {n}",
             "category": f"c{n % 12}", "source": f"s{n % 5}", "tags": [f"t{n % 30}", f"t{n % 7}"]}
            for n in range(items)]


@dataclass
class Check:
    """The ledger's figures: what Redis holds against what Kafka accepted."""

    missing: int  # events whose effect is absent (counter below truth, id not remembered)
    duplicate_effects: int  # counter increments beyond the truth
    missing_ids: int  # accepted event_ids not in any dedupe set
    applied: int  # the worker's applied counter
    aggregates_equal: bool  # every per-user and per-item counter equals the truth


def check_ledger(rig: Rig, accepted: list[dict]) -> Check:
    """Compare every per-user and per-item counter, and every event id, with the truth."""
    redis, keys = rig.stack.redis, rig.keys
    user_truth: Counter[tuple[str, str]] = Counter((e["user_id"], e["action"]) for e in accepted)
    item_truth: Counter[tuple[str, str]] = Counter((e["item_id"], e["action"]) for e in accepted)

    def read(truth: Counter, key_of: Callable[[str], str]) -> Counter:
        owners = sorted({owner for owner, _ in truth})
        pipe = redis.pipeline(transaction=False)
        for owner in owners:
            pipe.hgetall(key_of(owner))
        got: Counter[tuple[str, str]] = Counter()
        for owner, doc in zip(owners, pipe.execute()):
            for action in LEDGER_ACTIONS:
                if action.encode() in doc:
                    got[(owner, action)] = int(doc[action.encode()])
        return got

    user_got, item_got = read(user_truth, keys.user_counts), read(item_truth, keys.item_stats)
    missing = sum(max(0, user_truth[k] - user_got[k]) for k in user_truth)
    dup = sum(max(0, user_got[k] - user_truth[k]) for k in user_got | user_truth)
    dup += sum(max(0, item_got[k] - item_truth[k]) for k in item_got | item_truth)

    # The dedupe buckets: hashes of event id -> where it was read (keys.seen_bucket).
    buckets = [k for k in redis.scan_iter(match=keys.seen_bucket(0).rsplit(":", 1)[0] + ":*", count=1000)]
    ids = [e["event_id"] for e in accepted]
    known = [False] * len(ids)
    for bucket in buckets:
        for first in range(0, len(ids), 5000):
            found = redis.hmget(bucket, ids[first:first + 5000])
            for i, where in enumerate(found):
                known[first + i] = known[first + i] or where is not None
    return Check(
        missing=missing,
        duplicate_effects=dup,
        missing_ids=known.count(False),
        applied=rig.stack.applied("interactions"),
        aggregates_equal=user_got == user_truth and item_got == item_truth,
    )


def ledger_figures(result: TrialResult, check: Check, sent: int) -> None:
    """Put the ledger's figures and their exact bounds on ``result``."""
    result.figures.update(events=sent, missing=check.missing, missing_ids=check.missing_ids,
                          duplicate_effects=check.duplicate_effects, applied=check.applied,
                          aggregates_equal=check.aggregates_equal)
    result.bounds.update(missing=("==", 0), missing_ids=("==", 0), duplicate_effects=("==", 0),
                         applied=("==", sent), aggregates_equal=("==", True))


# -- a paced producer -----------------------------------------------------------------------


@dataclass
class Outcome:
    status: int
    at: float
    retry_after: str | None


class Producer(threading.Thread):
    """POSTs events to the API in batches at ``rate`` events/s, from a background thread.

    A batch answered 503 (or anything but 202) is sent again, same event_ids, after a
    short pause, as a careful client would: ``accepted`` lists exactly the events the API
    reported accepted, once each, in order.
    """

    def __init__(self, api: str, events: Iterator[dict], *, rate: float, batch: int = 100,
                 retry_s: float = 0.5, keep: bool = True) -> None:
        super().__init__(daemon=True, name="fault-producer")
        self.api, self.events, self.rate, self.batch, self.retry_s = api, events, rate, batch, retry_s
        self.keep = keep  # False: count accepted events only (long runs would hold millions)
        self.accepted: list[dict] = []
        self.accepted_count = 0
        self.outcomes: list[Outcome] = []
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported by the trial, not lost in a thread
            self.error = exc

    def _run(self) -> None:
        interval = self.batch / self.rate if self.rate > 0 else 0.0
        next_at = time.monotonic()
        with httpx.Client(timeout=60.0) as client:
            while not self.stop_event.is_set():
                chunk = [e for _, e in zip(range(self.batch), self.events)]
                if not chunk:
                    return
                while not self._post(client, chunk):
                    if self.stop_event.wait(self.retry_s):
                        return
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    self.stop_event.wait(delay)
                else:
                    next_at = time.monotonic()  # behind: do not burst to catch up

    def _post(self, client: httpx.Client, chunk: list[dict]) -> bool:
        try:
            resp = client.post(self.api + "/api/events", json=chunk)
        except httpx.HTTPError:
            self.outcomes.append(Outcome(0, time.monotonic(), None))
            return False
        self.outcomes.append(Outcome(resp.status_code, time.monotonic(), resp.headers.get("retry-after")))
        if resp.status_code == 202:
            self.accepted_count += len(chunk)
            if self.keep:
                self.accepted.extend(chunk)
            return True
        return False

    def finish(self, timeout_s: float = 120.0) -> None:
        """Let the producer send what is left of its events (it stops when they run out)."""
        self.join(timeout_s)
        if self.is_alive():
            raise TimeoutError("the producer did not finish its events in time")
        if self.error is not None:
            raise self.error

    def halt(self) -> None:
        self.stop_event.set()
        self.join(60)
        if self.error is not None:
            raise self.error


class LagSampler(threading.Thread):
    """Samples lag = events accepted by Kafka - events applied to Redis, every ``every_s``."""

    def __init__(self, rig: Rig, producer: Producer, every_s: float = 0.1) -> None:
        super().__init__(daemon=True, name="lag-sampler")
        self.rig, self.producer, self.every_s = rig, producer, every_s
        self.samples: list[tuple[float, int]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.every_s):
            accepted = self.producer.accepted_count
            try:
                applied = self.rig.stack.applied("interactions")
            except redis_lib.RedisError:  # Redis away (outage trials): no sample
                continue
            self.samples.append((time.monotonic(), accepted - applied))

    def first_zero_after(self, t: float) -> float | None:
        """Seconds from ``t`` to the first sample with no lag, None if it never happened."""
        for at, lag in self.samples:
            if at >= t and lag <= 0:
                return at - t
        return None

    def halt(self) -> None:
        self.stop_event.set()
        self.join(5)


def wait_applied(rig: Rig, n: int, timeout_s: float) -> float:
    """Seconds until the applied counter reaches ``n``; then a pause that would reveal extras."""
    start = time.monotonic()
    rig.stack.wait_applied("interactions", n, timeout_s=timeout_s)
    took = time.monotonic() - start
    time.sleep(1.0)
    return took


def start_api(rig: Rig, **env: str) -> str:
    """Start ``eddy api`` on the rig (waits until Kafka and Redis answer)."""
    return rig.stack.start_api(**env)


def api_pid(rig: Rig) -> int:
    return next(p.pid for n, p in rig.stack.children.procs if n == "api")


def post_all(api: str, events: list[dict], batch: int = 500) -> None:
    """POST events (a catalogue) in batches, insisting each is accepted."""
    with httpx.Client(timeout=60.0) as client:
        for first in range(0, len(events), batch):
            resp = client.post(api + "/api/events", json=events[first:first + batch])
            if resp.status_code != 202:
                raise RuntimeError(f"POST /api/events answered {resp.status_code}: {resp.text[:200]}")
