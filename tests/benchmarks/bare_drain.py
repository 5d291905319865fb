"""Baseline for the worker benchmark: a bare Faust agent that only decodes a topic.

Run as ``python -m tests.benchmarks.bare_drain TOPIC N MODE`` with EDDY_* settings in the
environment; prints one JSON line with the events/s between the first and the N-th record.
MODE is ``each`` (``async for`` per message), ``take`` (``stream.take_events``) or
``envelope`` (per message, counting the events inside each envelope record).
"""

from __future__ import annotations

import sys
import time

import faust
import orjson

from schemas.settings import Settings


def main() -> None:
    topic_name, total, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    settings = Settings()
    app = faust.App(
        settings.consumer_group,
        broker=settings.faust_broker,
        store="memory://",
        web_enabled=False,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
    )
    topic = app.topic(topic_name, value_serializer="raw", key_serializer="raw", partitions=settings.partitions)
    seen = {"n": 0, "t0": 0.0}

    def count(k: int) -> None:
        if seen["n"] == 0:
            seen["t0"] = time.perf_counter()
            seen["n0"] = k
        seen["n"] += k
        if seen["n"] >= total:
            elapsed = time.perf_counter() - seen["t0"]
            print(orjson.dumps({"events": seen["n"] - seen["n0"], "seconds": elapsed}).decode(), flush=True)

    @app.agent(topic, concurrency=1)
    async def drain(stream: faust.StreamT) -> None:
        if mode == "each":
            async for value in stream:
                orjson.loads(value)
                count(1)
        elif mode == "envelope":
            async for value in stream:
                count(len(orjson.loads(value)["envelope"]))
        else:
            async for batch in stream.take_events(settings.batch_max, within=0.02):
                for ev in batch:
                    orjson.loads(ev.value)
                count(len(batch))

    faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
