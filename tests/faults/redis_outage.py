"""Trial 3, Redis outage under load: redis-server (with AOF) is killed with SIGKILL, stays
away for a while, and is started again on the same port and data directory.

Meanwhile interactions keep flowing into the API and readers keep asking for lists: the
read endpoints must keep answering without a 5xx (the last list they served, marked
``stale``, or the cold-start list), the worker must wait and retry rather than crash or
skip, and once Redis is back the state must be exactly the truth. Figures: how long the
AOF took to bring the state back, how long the worker took to catch up.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import redis as redis_lib

from tests.faults.harness import (
    Producer,
    Rig,
    TrialResult,
    catalogue,
    check_ledger,
    ledger_event,
    ledger_figures,
    post_all,
    start_api,
)

SCALES = {
    "full": {"outage_s": 30.0, "warm_s": 10.0, "after_s": 10.0, "rate": 300.0, "users": 500, "items": 200},
    "short": {"outage_s": 3.0, "warm_s": 2.0, "after_s": 1.0, "rate": 300.0, "users": 100, "items": 100},
}

#: Bounds: the AOF brings the state back within RESTORE_S of the restart; the worker has
#: applied every accepted event within CATCH_UP_S (its Redis retries back off to 30 s).
RESTORE_S, CATCH_UP_S = 5.0, 45.0


class Reader(threading.Thread):
    """GETs lists of known and unknown users and the popular list, tallying answers."""

    def __init__(self, api: str, users: int) -> None:
        super().__init__(daemon=True, name="reader")
        self.api, self.users = api, users
        self.codes: Counter[int] = Counter()
        self.stale = 0
        self.errors: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        n = 0
        with httpx.Client(timeout=10.0) as client:
            while not self.stop_event.wait(0.02):
                n += 1
                path = ("/api/popular" if n % 5 == 0 else
                        f"/api/recommendations?user_id=nobody{n}" if n % 5 == 1 else
                        f"/api/recommendations?user_id=u{n % self.users}")
                try:
                    resp = client.get(self.api + path)
                except httpx.HTTPError as exc:
                    self.codes[0] += 1
                    self.errors.append(f"{path}: {exc!r}")
                    continue
                self.codes[resp.status_code] += 1
                if resp.status_code >= 500:
                    self.errors.append(f"{path}: {resp.status_code} {resp.text[:200]}")
                elif resp.json().get("stale"):
                    self.stale += 1

    def halt(self) -> Counter[int]:
        self.stop_event.set()
        self.join(15)
        return self.codes


def restored_after(rig: Rig, applied_before: int, restarted: float) -> float | None:
    """Seconds from the restart until Redis answers with the state it had (None: not in 60 s)."""
    probe = redis_lib.Redis(port=rig.redis_port)
    field = f"applied:{rig.stack.topic('interactions')}"
    while time.monotonic() - restarted < 60:
        try:
            if int(probe.hget(rig.keys.stats, field) or 0) >= applied_before:
                return time.monotonic() - restarted
        except redis_lib.RedisError:  # still loading the AOF, or not listening yet
            pass
        time.sleep(0.01)
    return None


def run(scale: str) -> TrialResult:
    p = SCALES[scale]
    result = TrialResult("redis_outage", scale)
    rig = Rig("redis-outage", redis_aof=True)
    try:
        rig.stack.start_worker("worker")
        api = start_api(rig)
        post_all(api, catalogue(p["items"]))
        events = (ledger_event(n, p["users"], p["items"]) for n in range(10**9))
        producer = Producer(api, events, rate=p["rate"], batch=50)
        producer.start()
        time.sleep(p["warm_s"])
        reader = Reader(api, p["users"])
        reader.start()
        time.sleep(1.0)
        before_codes = Counter(reader.codes)
        applied_before = rig.stack.applied("interactions")
        rig.kill_redis()
        time.sleep(p["outage_s"])
        during = reader.codes - before_codes
        restarted = time.monotonic()
        rig.start_redis()
        restore_s = restored_after(rig, applied_before, restarted)
        time.sleep(p["after_s"])
        producer.halt()
        reader_codes = reader.halt()
        sent = len(producer.accepted)
        deadline = restarted + CATCH_UP_S + 30
        while rig.stack.applied("interactions") < sent and time.monotonic() < deadline:
            time.sleep(0.05)
        catch_up_s = time.monotonic() - restarted
        time.sleep(1.0)
        check = check_ledger(rig, producer.accepted)
        ledger_figures(result, check, sent)
        server_errors = sum(n for code, n in reader_codes.items() if code >= 500 or code == 0)
        result.figures.update(
            outage_s=p["outage_s"], reads=sum(reader_codes.values()), reads_during_outage=sum(during.values()),
            read_5xx=server_errors, stale_reads=reader.stale, posts_refused=sum(o.status != 202 for o in producer.outcomes),
            aof_restore_s=None if restore_s is None else round(restore_s, 2), catch_up_s=round(catch_up_s, 1), worker_exits=len(rig.exited()),
        )
        result.bounds.update(read_5xx=("==", 0), aof_restore_s=("<=", RESTORE_S), catch_up_s=("<=", CATCH_UP_S),
                             worker_exits=("==", 0))
        if reader.errors:
            result.figures["first_5xx"] = repr(reader.errors[0][:120])
        return result
    finally:
        rig.close()
