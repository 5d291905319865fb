"""What spreading users over workers costs the recommender, on a real stream: one worker
beside N workers sharing their facts (a second of event-time lag, as a live worker keeping up),
N workers under a backlog's lag (facts exchanged every 500 interactions only), and N workers
each learning from its own users only. Each variant in its own process, two at a time.
Figures go to docs/scale-out.md.

    python -m tests.benchmarks.scale_out ../shared/data/movietweetings-2013.jsonl.gz --workers 4
"""

from __future__ import annotations

import argparse
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.console import Console

from deploy.evaluate import load_events
from online_models.evaluation import Prequential
from online_models.hybrid import HybridRecommender
from online_models.sharded import Sharded

#: name -> (workers multiplier, exchange_every, exchange_s): 0 workers means one worker.
VARIANTS = {
    "1 worker": (0, 0, 0.0),
    "shared": (1, 500, 1.0),
    "lag 500 events": (1, 500, math.inf),
    "own users only": (1, 0, 0.0),
}


def run(path: Path, name: str, workers: int) -> tuple[str, dict]:
    n, every, seconds = VARIANTS[name]
    events, _ = load_events(path, Console(stderr=True))
    model = HybridRecommender() if n == 0 else Sharded(HybridRecommender, workers, every, seconds)
    return name, Prequential({"eddy": model}, k=10).run(events)["models"]["eddy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("events_file", type=Path)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = dict(pool.map(run, [args.events_file] * len(VARIANTS), VARIANTS, [args.workers] * len(VARIANTS)))
    one = results["1 worker"]["hr"]
    print(f"{args.events_file.name}, {args.workers} workers: HR@10 / NDCG@10 (change of HR against one worker)")
    for name, m in results.items():
        print(f"  {name:16s} {m['hr']:.4f} / {m['ndcg']:.4f}  ({(m['hr'] - one) / one:+.1%})")


if __name__ == "__main__":
    main()
