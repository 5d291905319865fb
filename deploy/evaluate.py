"""``eddy evaluate``: replay a JSON-lines file of events through the recommenders in-process.

The file is read once, each line validated with the same schemas as the API (invalid
lines are counted and reported, not fatal), sorted by event time, and fed to
:class:`online_models.evaluation.Prequential` — the same learning code the worker runs.

The models learn nothing from each other, so each group of them (Eddy; Eddy as several
workers; the baselines) replays the stream in its own process where the machine has a core
for it: forked after the file is read, so the events are shared, not copied or pickled.
The figures are the same as one process replaying them all.
"""

from __future__ import annotations

import gzip
import multiprocessing
import os
import sys
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from deploy.runtime import tune_gc
from online_models.evaluation import Prequential
from online_models.hybrid import HybridRecommender
from online_models.knn import ItemKNN
from online_models.popularity import Popularity
from online_models.sharded import Sharded
from schemas.events import EventDecodeError, validate_event

RELEVANT = frozenset({"item", "interaction", "preference", "user_deleted"})


def default_models(workers: int = 1) -> dict:
    models = {"eddy": HybridRecommender()}
    if workers > 1:  # what a deployment of that many workers would learn (online_models/sharded.py)
        models[f"eddy_{workers}_workers"] = Sharded(HybridRecommender, workers)
    return models | {
        "popularity": Popularity(),
        "decayed_popularity": Popularity(half_life_s=3 * 86400.0),
        "knn": ItemKNN(history=20),
    }


def model_groups(models: dict) -> list[list[str]]:
    """The models in groups of about equal replay time: each Eddy alone, the baselines together."""
    eddies = [[name] for name in models if name.startswith("eddy")]
    rest = [name for name in models if not name.startswith("eddy")]
    return eddies + ([rest] if rest else [])


def _replay(events: list, models: dict, k: int, done, out) -> None:  # noqa: ANN001 (a shared counter, a pipe)
    def advance(n: int) -> None:
        done.value += n

    out.send(Prequential(models, k=k).run(events, progress=advance))
    out.close()


def replay_in_parallel(events: list, models: dict, k: int, progress) -> dict:  # noqa: ANN001
    """``Prequential(models, k).run(events)``, each group of :func:`model_groups` in its own
    forked process when there are cores for more than one; ``progress(n)`` is told of the
    events the slowest group has replayed."""
    groups = model_groups(models)
    if len(groups) < 2 or len(os.sched_getaffinity(0)) < 2:
        return Prequential(models, k=k).run(events, progress=progress)
    context = multiprocessing.get_context("fork")
    jobs = []
    for group in groups:
        done = context.Value("q", 0, lock=False)
        receive, send = context.Pipe(duplex=False)
        proc = context.Process(target=_replay, args=(events, {name: models[name] for name in group}, k, done, send),
                               daemon=True)
        proc.start()
        send.close()
        jobs.append((proc, done, receive))
    reports, shown = [], 0
    try:
        for proc, _, receive in jobs:
            while not receive.poll(0.2):
                if not proc.is_alive() and not receive.poll(0):  # exited without sending its report
                    raise RuntimeError(f"a replay process died (exit code {proc.exitcode})")
                slowest = min(done.value for _, done, _ in jobs)
                if slowest > shown:
                    progress(slowest - shown)
                    shown = slowest
            reports.append(receive.recv())
            proc.join()
    finally:
        for proc, _, _ in jobs:
            if proc.is_alive():
                proc.kill()
    progress(len(events) - shown)
    report = reports[0]
    merged = {name: m for r in reports for name, m in r["models"].items()}
    report["models"] = {name: merged[name] for name in models}  # in the order asked for
    return report


def load_events(path: Path, console: Console) -> tuple[list, int]:
    events, invalid = [], 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                event = validate_event(orjson.loads(line))
            except (orjson.JSONDecodeError, EventDecodeError) as exc:
                invalid += 1
                if invalid <= 5:
                    console.print(f"[yellow]line {n} skipped:[/] {getattr(exc, 'reason', exc)}", highlight=False)
                continue
            if event.type in RELEVANT:
                if event.ts is None:
                    event.ts = float(n)  # no time given: keep the file's order
                events.append(event)
    events.sort(key=lambda e: e.ts)  # stable: ties keep the file's order
    return events, invalid


def run_evaluation(path: Path, *, k: int, as_json: bool, console: Console, workers: int = 1) -> int:
    tune_gc()  # fewer collector passes over the growing models (deploy/runtime.py)
    if not path.exists():
        console.print(f"[red]no such file: {path}[/]")
        return 2
    err = Console(stderr=True)
    started = time.perf_counter()
    events, invalid = load_events(path, err)
    models = default_models(workers)
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True, disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task("replaying", total=len(events))
        if progress.disable:  # not a terminal: a line every 10% instead of a bar
            step = max(1, len(events) // 10)
            done = 0

            def advance(n: int) -> None:
                nonlocal done
                before, done = done, done + n
                if done // step > before // step:
                    rate = done / max(1e-9, time.perf_counter() - started)
                    err.print(f"replayed {done:,}/{len(events):,} events ({rate:,.0f}/s)", highlight=False)
        else:
            def advance(n: int) -> None:
                progress.advance(task, n)
        report = replay_in_parallel(events, models, k, advance)
    seconds = time.perf_counter() - started
    report["seconds"] = round(seconds, 1)
    report["events_per_s"] = round(report["events"] / max(seconds, 1e-9))
    if invalid:
        report["invalid_lines"] = invalid
    if as_json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
        return 0
    table = Table(title=f"{report['events']:,} events, {report['targets']:,} targets, k={k}, "
                        f"{report['seconds']} s ({report['events_per_s']:,} events/s)")
    for col in ("model", f"HR@{k}", f"NDCG@{k}", "coverage"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, m in report["models"].items():
        table.add_row(name, f"{m['hr']:.4f}", f"{m['ndcg']:.4f}", f"{m['coverage']:.3f}")
    console.print(table)
    return 0
