"""Trial 1, the ledger under kill -9: sequence-numbered interactions flow through the API
while the worker is killed with SIGKILL at a fixed period and started again each time.

Every event has a known event_id, user, item and action, so the truth is known exactly:
each per-user and per-item counter must equal it (no event missing, none applied twice),
every accepted id must be in a dedupe set, and the applied counter must equal the number
of events Kafka accepted.
"""

from __future__ import annotations

import time

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
    wait_applied,
)

SCALES = {
    "full": {"events": 100_000, "kills": 8, "every_s": 15.0, "users": 2_000, "items": 500, "session_s": 6.0},
    "short": {"events": 3_000, "kills": 2, "every_s": 2.0, "users": 200, "items": 100, "session_s": 3.0},
}


def run(scale: str) -> TrialResult:
    p = SCALES[scale]
    result = TrialResult("ledger", scale)
    rig = Rig("ledger", session_timeout_s=p["session_s"])
    try:
        rig.stack.start_worker("worker-0")
        api = start_api(rig)
        # The load spans every kill and one period after the last.
        rate = p["events"] / ((p["kills"] + 1) * p["every_s"])
        post_all(api, catalogue(p["items"]))
        events = (ledger_event(n, p["users"], p["items"]) for n in range(p["events"]))
        producer = Producer(api, events, rate=rate)
        producer.start()
        under_load, restart_s = 0, []
        started = time.monotonic()
        for n in range(p["kills"]):
            time.sleep(max(0.0, started + (n + 1) * p["every_s"] - time.monotonic()))
            lag = len(producer.accepted) - rig.stack.applied("interactions")
            under_load += lag > 0 or producer.is_alive()
            rig.kill9_worker(f"worker-{n}")
            t = time.monotonic()
            rig.stack.start_worker(f"worker-{n + 1}", wait_s=90)
            restart_s.append(time.monotonic() - t)
        producer.finish(timeout_s=600)
        drain_s = wait_applied(rig, len(producer.accepted), timeout_s=300)
        check = check_ledger(rig, producer.accepted)
        ledger_figures(result, check, len(producer.accepted))
        result.figures.update(kills=p["kills"], kills_under_load=under_load,
                              rate=round(rate), restart_max_s=round(max(restart_s), 1),
                              drain_s=round(drain_s, 1), worker_exits=len(rig.exited()))
        result.bounds.update(kills_under_load=("==", p["kills"]), worker_exits=("==", 0))
        return result
    finally:
        rig.close()
