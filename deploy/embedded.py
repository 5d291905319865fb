"""``eddy up``: the whole stack on one machine, without Docker.

Starts, on free loopback ports, the Tansu broker (memory storage), redis-server, one
worker, the API, the demo producer and the example scraper; shows their state live; and on
Ctrl-C (or after ``--duration``) stops every process it started. The example scraper is
the only source of scrape attempts: the demo producer runs with ``--no-scrapes``, so the
attempts the worker learns from all come from a scraper that follows its decisions.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from pathlib import Path

import httpx
import redis
from rich.console import Console
from rich.live import Live
from rich.table import Table

from deploy.processes import Children, free_port, wait_for_port
from deploy.simulator import SimConfig
from deploy.topics import ensure_topics
from schemas.keys import Keys
from schemas.settings import Settings
from schemas.topics import CATALOGUE


#: Seconds between two status lines when the output is not a terminal (no live table).
STATUS_EVERY_S = 10.0


def _status(children: Children, api: str, r: redis.Redis, keys: Keys) -> list[tuple[str, str]]:
    """(part, state) rows: each process, readiness, events applied per topic."""
    rows = [(name, "[green]running[/]" if alive else "[red]exited[/]") for name, alive in children.alive().items()]
    try:
        ready = httpx.get(f"{api}/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        ready = False
    rows.append(("/readyz", "[green]200 ready[/]" if ready else "[yellow]not ready[/]"))
    try:
        stats = {k.decode(): int(v) for k, v in r.hgetall(keys.stats).items()}
    except redis.RedisError:
        stats = {}
    rows += [(f"applied {spec.name}", str(stats.get(f"applied:{spec.name}", 0))) for spec in CATALOGUE if spec.inbound]
    return rows


def _status_table(rows: list[tuple[str, str]], started: float) -> Table:
    table = Table(title=f"Eddy — up {time.monotonic() - started:.0f}s — Ctrl-C to stop", expand=False)
    table.add_column("part")
    table.add_column("state")
    for part, state in rows:
        table.add_row(part, state)
    return table


def _step(console: Console, message: str) -> contextlib.AbstractContextManager:
    """A spinner on a terminal; a plain line otherwise (a spinner is invisible in a file)."""
    if console.is_terminal:
        return console.status(message)
    console.print(message)
    return contextlib.nullcontext()


def _status_line(rows: list[tuple[str, str]], started: float) -> str:
    """The status as one line, for a log file or a pipe."""
    return f"up {time.monotonic() - started:.0f}s: " + ", ".join(f"{part} {state}" for part, state in rows)


def run_stack(
    *,
    demo: bool,
    rate: float,
    api_port: int,
    duration: float,
    workdir: Path,
    console: Console,
    scraper_rate: float = 20.0,
) -> int:
    """Run the embedded stack until Ctrl-C, ``duration`` or a child's death; returns an exit code."""
    started = time.monotonic()
    children = Children(log_dir=workdir / "logs")
    broker_port, redis_port = free_port(), free_port()
    api_port = api_port or free_port()
    metrics_port = free_port()
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{broker_port}",
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        session_timeout_s=6.0,  # Tansu completes a group join after half the session timeout
    )
    env = {
        "EDDY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "EDDY_REDIS_URL": settings.redis_url,
        "EDDY_SESSION_TIMEOUT_S": str(settings.session_timeout_s),
        "EDDY_WORKER_METRICS_PORT": str(metrics_port),
        "EDDY_LOG_LEVEL": "warning",
        # A fresh admin key per run, shown below, so pins work locally and nowhere else.
        "EDDY_ADMIN_API_KEY": os.environ.get("EDDY_ADMIN_API_KEY") or secrets.token_urlsafe(24),
        # The worker must know every strategy the example scraper can use, not only the
        # ones it has seen attempts of, to offer them for exploration and switch to them.
        "EDDY_SCRAPE_STRATEGIES": ",".join(SimConfig().strategies),
        # One shadow challenger with faster-fading taste, so the registry has something to
        # compare and promote; snapshots go beside the logs.
        "EDDY_RECS_CHALLENGERS": os.environ.get("EDDY_RECS_CHALLENGERS") or '[{"half_life_s": 86400}]',
        "EDDY_SNAPSHOT_DIR": str(workdir / "snapshots"),
    }
    api = f"http://127.0.0.1:{api_port}"
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    # Installed explicitly: a shell that starts us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        with _step(console, "starting broker and Redis…"):
            children.start_broker(broker_port)
            children.start_redis(redis_port, workdir / "redis")
            ensure_topics(settings)
        with _step(console, "starting worker and API…"):
            children.start_eddy("worker", ["worker"], env)
            api_proc = children.start_eddy("api", ["api", "--port", str(api_port)], env)
            wait_for_port(api_port, proc=api_proc)
        if demo:
            children.start_eddy("simulate", ["simulate", "--api", api, "--rate", str(rate), "--no-scrapes"], env)
            children.start_eddy("scraper", ["scraper", "--rate", str(scraper_rate)], env)
        console.print(
            f"[bold]Eddy is up[/] in {time.monotonic() - started:.1f}s\n"
            f"  API        {api}\n"
            f"  web app    {api}/ (feed), {api}/dashboard\n"
            f"  docs       {api}/docs\n"
            f"  readiness  {api}/readyz\n"
            f"  admin key  {env['EDDY_ADMIN_API_KEY']} (X-API-Key for POST /api/strategies/{{domain}}/pin, the dashboard's promote/rollback)\n"
            f"  metrics    {api}/metrics (API), http://127.0.0.1:{metrics_port}/metrics (worker)\n"
            f"  Kafka      127.0.0.1:{broker_port}   Redis redis://127.0.0.1:{redis_port}/0\n"
            f"  logs       {children.log_dir}/"
        )
        r = redis.Redis.from_url(settings.redis_url, socket_timeout=1)
        keys = Keys(settings.redis_prefix)
        # On a terminal a live table; otherwise (make run > file) a status line every 10 s.
        last_line = float("-inf")
        live_table = Live(console=console, refresh_per_second=1, transient=False) if console.is_terminal else None
        with live_table or contextlib.nullcontext() as live:
            while not stop_requested:
                rows = _status(children, api, r, keys)
                if console.is_terminal:
                    live.update(_status_table(rows, started))
                elif time.monotonic() - last_line >= STATUS_EVERY_S:
                    last_line = time.monotonic()
                    console.print(_status_line(rows, started), soft_wrap=True)
                dead = [name for name, alive in children.alive().items() if not alive]
                if dead:
                    console.print(f"[red]{', '.join(dead)} exited; see {children.log_dir}/ — stopping[/]")
                    return 1
                if duration and time.monotonic() - started >= duration:
                    break
                time.sleep(1.0)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        console.print("\nstopping every process Eddy started…")
        children.stop()
        console.print("stopped.")
