"""Trial 4, broker outage under load: the broker is frozen (SIGSTOP) for a while, then
resumed (SIGCONT), while interactions keep being POSTed.

The broker is Tansu with in-memory storage, which loses its log when its process dies, so
the outage is a freeze rather than a kill: to clients it looks like a broker that stopped
answering (connections hang, requests time out), which is the harder case for them.

While it is away, POST /api/events must answer 503 with Retry-After (and nothing else);
a refused batch is sent again with the same event_ids, as a careful client does. Nothing
the API accepted may be lost, and a batch that Kafka took after all, though the API had
already answered 503, must not be applied twice. The worker must reconnect by itself.
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
)

SCALES = {
    "full": {"outage_s": 30.0, "warm_s": 10.0, "after_s": 15.0, "rate": 300.0, "users": 500, "items": 200},
    "short": {"outage_s": 4.0, "warm_s": 2.0, "after_s": 2.0, "rate": 300.0, "users": 100, "items": 100},
}

#: The API waits this long for Kafka's acks before answering 503 (EDDY_PRODUCE_TIMEOUT_S).
PRODUCE_TIMEOUT_S = 2.0
#: Bounds: the first batch accepted after the broker is back, and every accepted event
#: applied, within these many seconds of the resume.
RECONNECT_S, CATCH_UP_S = 20.0, 60.0


def run(scale: str) -> TrialResult:
    p = SCALES[scale]
    result = TrialResult("broker_outage", scale)
    rig = Rig("broker-outage")
    try:
        rig.stack.start_worker("worker")
        api = start_api(rig, EDDY_PRODUCE_TIMEOUT_S=str(PRODUCE_TIMEOUT_S))
        post_all(api, catalogue(p["items"]))
        events = (ledger_event(n, p["users"], p["items"]) for n in range(10**9))
        producer = Producer(api, events, rate=p["rate"], batch=50, retry_s=0.2)
        producer.start()
        time.sleep(p["warm_s"])
        paused = time.monotonic()
        rig.pause_broker()
        time.sleep(p["outage_s"])
        resumed = time.monotonic()
        rig.resume_broker()
        time.sleep(p["after_s"])
        producer.halt()
        sent = len(producer.accepted)
        while rig.stack.applied("interactions") < sent and time.monotonic() < resumed + CATCH_UP_S + 30:
            time.sleep(0.05)
        catch_up_s = time.monotonic() - resumed
        time.sleep(1.0)
        check = check_ledger(rig, producer.accepted)
        ledger_figures(result, check, sent)
        during = [o for o in producer.outcomes if paused <= o.at]
        refused = [o for o in during if o.status == 503]
        reconnect = next((o.at - resumed for o in during if o.at >= resumed and o.status == 202), None)
        result.figures.update(
            outage_s=p["outage_s"],
            posts=len(producer.outcomes),
            posts_503=len(refused),
            posts_503_without_retry_after=sum(o.retry_after is None for o in refused),
            posts_other_errors=sum(o.status not in (202, 503) for o in producer.outcomes),
            reconnect_s=None if reconnect is None else round(reconnect, 1),
            catch_up_s=round(catch_up_s, 1),
            worker_exits=len(rig.exited()),
        )
        result.bounds.update(posts_503=(">", 0), posts_503_without_retry_after=("==", 0),
                             posts_other_errors=("==", 0), reconnect_s=("<=", RECONNECT_S),
                             catch_up_s=("<=", CATCH_UP_S), worker_exits=("==", 0))
        return result
    finally:
        rig.close()
