"""Process-wide runtime settings of Eddy's workers, API processes and batch jobs."""

from __future__ import annotations

import gc

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
