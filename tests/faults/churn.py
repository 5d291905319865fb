"""Trial 2, rebalance churn: under a steady load, the consumer group goes from one worker
to two and back to one, several times (a second worker started, then stopped gracefully).

Same truth as the ledger (nothing missing, nothing applied twice, counters equal to the
truth), plus how long after each scale step the lag (events Kafka accepted minus events
applied to Redis) first returns to 0.
"""

from __future__ import annotations

import time

from tests.faults.harness import (
    LagSampler,
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
    "full": {"cycles": 3, "hold_s": 20.0, "rate": 500.0, "users": 2_000, "items": 500, "lag_zero_s": 30.0},
    "short": {"cycles": 1, "hold_s": 2.0, "rate": 300.0, "users": 200, "items": 100, "lag_zero_s": 30.0},
}


def run(scale: str) -> TrialResult:
    p = SCALES[scale]
    result = TrialResult("churn", scale)
    rig = Rig("churn")
    try:
        rig.stack.start_worker("worker-a")
        api = start_api(rig)
        post_all(api, catalogue(p["items"]))
        # Enough events for the whole run; the producer is stopped after the last step.
        events = (ledger_event(n, p["users"], p["items"]) for n in range(10**9))
        producer = Producer(api, events, rate=p["rate"], batch=50)
        producer.start()
        sampler = LagSampler(rig, producer)
        sampler.start()
        steps: list[float] = []
        time.sleep(p["hold_s"])
        for n in range(p["cycles"]):
            steps.append(time.monotonic())
            rig.stack.start_worker(f"worker-b{n}", wait_s=90)
            time.sleep(p["hold_s"])
            steps.append(time.monotonic())
            rig.stack.children.stop_one(f"worker-b{n}")
            time.sleep(p["hold_s"])
        producer.halt()
        wait_applied(rig, len(producer.accepted), timeout_s=300)
        sampler.halt()
        to_zero = [sampler.first_zero_after(t) for t in steps]
        check = check_ledger(rig, producer.accepted)
        ledger_figures(result, check, len(producer.accepted))
        worst = None if None in to_zero else round(max(to_zero), 1)
        result.figures.update(cycles=p["cycles"], scale_steps=len(steps), rate=p["rate"],
                              lag_to_zero_s=[None if s is None else round(s, 1) for s in to_zero],
                              lag_to_zero_max_s=worst, peak_lag=max(lag for _, lag in sampler.samples),
                              worker_exits=len(rig.exited()))
        result.bounds.update(lag_to_zero_max_s=("<=", p["lag_zero_s"]), worker_exits=("==", 0))
        return result
    finally:
        rig.close()
