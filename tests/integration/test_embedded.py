"""`make run` (`eddy up`) with its output redirected to a file: it says what it starts, that
it is up, and how it is doing every 10 s (issue 18: a live table shows nothing in a file)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import until

pytestmark = pytest.mark.integration


def test_eddy_up_reports_progress_in_a_file(tmp_path: Path) -> None:
    log = tmp_path / "up.log"

    def status_lines() -> list[str]:
        return [line for line in log.read_text().splitlines() if line.startswith("up ") and "worker running" in line]

    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", "up", "--no-demo", "--api-port", "0", "--workdir", str(tmp_path / "eddy")],
            stdout=out, stderr=subprocess.STDOUT,
        )
        try:
            # Two status lines, ten seconds apart; then Ctrl-C, as a user would.
            until(lambda: len(status_lines()) >= 2 or proc.poll() is not None, timeout_s=90)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    lines = text.splitlines()
    assert "starting broker and Redis…" in lines and "starting worker and API…" in lines
    assert any(line.startswith("Eddy is up in ") for line in lines), text
    status = status_lines()
    assert len(status) >= 2 and "/readyz 200 ready" in status[-1], text
    assert lines[-1] == "stopped."
