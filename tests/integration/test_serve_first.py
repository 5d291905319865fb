"""An API asked for real-time priority (EDDY_API_REALTIME_PRIORITY) gets it, and serves."""

from __future__ import annotations

import os

import httpx

from tests.conftest import Stack, can_raise_priority


def test_an_api_asked_for_realtime_priority_runs_its_event_loop_on_round_robin(stack: Stack) -> None:
    stack.extra_env = {"api_realtime_priority": 2}
    api = stack.start_api()
    pid = next(proc.pid for name, proc in stack.children.procs if name == "api")
    resp = httpx.get(api + "/api/recommendations", params={"user_id": "ann"})
    assert resp.status_code == 200 and resp.json()["cold_start"] is True
    # One uvicorn process: its main thread runs the event loop and the lifespan.
    if can_raise_priority():
        assert os.sched_getscheduler(pid) == os.SCHED_RR | os.SCHED_RESET_ON_FORK
        assert os.sched_getparam(pid).sched_priority == 2
    else:
        assert os.sched_getscheduler(pid) == os.SCHED_OTHER
        log = (stack.children.log_dir / "api.log").read_text()
        assert "real-time priority 2 refused (needs CAP_SYS_NICE)" in log


def test_an_api_by_default_stays_on_the_default_scheduler(stack: Stack) -> None:
    api = stack.start_api()
    pid = next(proc.pid for name, proc in stack.children.procs if name == "api")
    assert httpx.get(api + "/api/recommendations", params={"user_id": "ann"}).status_code == 200
    assert os.sched_getscheduler(pid) == os.SCHED_OTHER
