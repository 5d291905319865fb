"""Process-wide runtime settings of Eddy's workers, API processes and batch jobs."""

from __future__ import annotations

import gc
import logging
import os

log = logging.getLogger(__name__)

#: Net allocations between two young-generation collections, then how many of those per
#: middle- and per old-generation pass. With Python's default (700, 10, 10) the cycle
#: collector took two thirds of the time of reading a replayed log (1.42 s of 100,000
#: events, 0.47 s with it off): every event allocates a model and its fields, and the
#: recommender holds millions of long-lived objects that each older pass walks again.
#: Eddy's state makes few reference cycles; what it does make is still collected.
GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Fewer, larger garbage-collection passes (see :data:`GC_THRESHOLDS`)."""
    gc.set_threshold(*GC_THRESHOLDS)


def serve_first(priority: int, pid: int = 0) -> bool:
    """Ask the kernel to run a latency-bound process (the API, Redis) ahead of CPU-bound
    neighbours (the worker, the broker) on a shared host: ``SCHED_RR`` at ``priority``,
    with the reset-on-fork flag, so neither forked children nor threads started later
    inherit it.

    ``pid`` 0: the calling thread only (the API calls this from its event loop's thread);
    another ``pid``: each thread that process has now (a thread ending meanwhile is
    skipped). Linux's fair scheduler lets a running CPU-bound task finish its slice
    (milliseconds) before a task that just woke gets the CPU, and a served read wakes the
    API, then Redis, then the API again. Needs ``CAP_SYS_NICE``; without it a warning is
    logged and the threads keep the default policy. True when applied.
    """
    policy = os.SCHED_RR | os.SCHED_RESET_ON_FORK
    threads = [0] if pid == 0 else [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    try:
        for tid in threads:
            try:
                os.sched_setscheduler(tid, policy, os.sched_param(priority))
            except ProcessLookupError:
                continue  # the thread ended since the listing
    except PermissionError:
        log.warning("real-time priority %d refused (needs CAP_SYS_NICE); running with the default scheduler", priority)
        return False
    return True
