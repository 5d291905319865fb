"""``eddy evaluate``: replay a JSON-lines file of events through the recommenders in-process.

The file is read once, each line validated with the same schemas as the API (invalid
lines are counted and reported, not fatal), sorted by event time, and fed to
:class:`online_models.evaluation.Prequential` — the same learning code the worker runs.
"""

from __future__ import annotations

import gzip
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
    runner = Prequential(default_models(workers), k=k)
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
                done += n
                if done % step == 0:
                    rate = done / max(1e-9, time.perf_counter() - started)
                    err.print(f"replayed {done:,}/{len(events):,} events ({rate:,.0f}/s)", highlight=False)
        else:
            def advance(n: int) -> None:
                progress.advance(task, n)
        report = runner.run(events, progress=advance)
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
