"""`make run` (`eddy up`) with its output redirected to a file: it says what it starts, that
it is up, and how it is doing every 10 s (issue 18: a live table shows nothing in a file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_eddy_up_reports_progress_in_a_file(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "deploy.cli", "up", "--no-demo", "--api-port", "0", "--duration", "12",
             "--workdir", str(tmp_path / "eddy")],
            stdout=out, stderr=subprocess.STDOUT, timeout=120, check=False,
        )
    text = log.read_text()
    assert proc.returncode == 0, text
    lines = text.splitlines()
    assert "starting broker and Redis…" in lines and "starting worker and API…" in lines
    assert any(line.startswith("Eddy is up in ") for line in lines), text
    status = [line for line in lines if line.startswith("up ") and "worker running" in line]
    assert len(status) >= 2 and "/readyz 200 ready" in status[-1], text
    assert lines[-1] == "stopped."
