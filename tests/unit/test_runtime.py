"""Process-wide runtime settings: the serving path's real-time priority."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from deploy.runtime import serve_first
from tests.conftest import can_raise_priority

needs_priority = pytest.mark.skipif("not can_raise_priority()", reason="needs CAP_SYS_NICE (the refusal is tested below)")


@needs_priority
def test_serve_first_puts_every_thread_of_another_process_on_round_robin_reset_on_fork() -> None:
    # A second thread, so "every thread" means more than one.
    child = subprocess.Popen([sys.executable, "-c", "import threading, time; threading.Thread(target=time.sleep, "
                              "args=(30,)).start(); print(flush=True); time.sleep(30)"], stdout=subprocess.PIPE)
    try:
        child.stdout.readline()  # its second thread has started
        threads = [int(t) for t in os.listdir(f"/proc/{child.pid}/task")]
        assert len(threads) == 2
        assert serve_first(3, child.pid) is True
        for tid in threads:
            assert os.sched_getscheduler(tid) == os.SCHED_RR | os.SCHED_RESET_ON_FORK
            assert os.sched_getparam(tid).sched_priority == 3
    finally:
        child.kill()
        child.wait()


@needs_priority
def test_serve_first_of_the_calling_thread_is_not_inherited_by_threads_or_children_it_starts() -> None:
    # What the API does from its event loop; in a child so this test process keeps its policy.
    script = """
import os, subprocess, sys, threading
from deploy.runtime import serve_first
ok = serve_first(2)
seen = {}
thread = threading.Thread(target=lambda: seen.update(thread=os.sched_getscheduler(0)))
thread.start(); thread.join()
child = subprocess.run([sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
                       capture_output=True, text=True, check=True)
print(ok, os.sched_getscheduler(0), os.sched_getparam(0).sched_priority, seen["thread"], child.stdout.strip())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", str(os.SCHED_RR | os.SCHED_RESET_ON_FORK), "2", str(os.SCHED_OTHER), str(os.SCHED_OTHER)]


def test_serve_first_without_the_privilege_warns_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    asked: list[tuple[int, int, int]] = []

    def refuse(tid: int, policy: int, param: os.sched_param) -> None:
        asked.append((tid, policy, param.sched_priority))
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with caplog.at_level(logging.WARNING, logger="deploy.runtime"):
        assert serve_first(1) is False
    assert asked == [(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, 1)]
    assert "real-time priority 1 refused (needs CAP_SYS_NICE)" in caplog.text
