"""Process-wide runtime settings: the serving path's real-time priority."""

from __future__ import annotations

import logging
import os
import subprocess

import pytest

from deploy.runtime import serve_first


def _can_raise() -> bool:
    child = subprocess.Popen(["sleep", "5"])
    try:
        os.sched_setscheduler(child.pid, os.SCHED_RR, os.sched_param(1))
        return True
    except PermissionError:
        return False
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(not _can_raise(), reason="needs CAP_SYS_NICE (the refusal is tested below)")
def test_serve_first_puts_every_thread_of_a_process_on_round_robin_not_inherited_by_its_children() -> None:
    # python -c with a second thread, so "every thread" means more than one.
    child = subprocess.Popen(["python3", "-c", "import threading, time; threading.Thread(target=time.sleep, "
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


def test_serve_first_without_the_privilege_warns_and_leaves_the_process_as_it_was(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with caplog.at_level(logging.WARNING, logger="deploy.runtime"):
        assert serve_first(1) is False
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    assert "real-time priority 1 refused (needs CAP_SYS_NICE)" in caplog.text
