"""Self-healing scrapers through Kafka end to end, beside an oracle and never switching.

50 domains x 4 strategies (the simulator's success rates: one good, one fallback, two
poor). Half of the domains are stable; on the other half each strategy breaks and recovers
at random (per attempt on the domain). A scraper loop uses the real
:class:`~deploy.scraper_client.ScraperClient`: it asks for a strategy, scrapes the
simulated web, reports the attempt to Kafka, and follows the switches a real ``eddy
worker`` publishes. Figures:

- attempts on a domain from the break of the strategy in use to the worker's decision,
  and to the switch applied at the scraper (goal: median <= 8);
- false switches per 10,000 attempts on stable domains: switches to a strategy no better
  than the one left (goal: <= 1);
- the success rate achieved, beside an oracle that always uses the best strategy now, and
  beside never switching (staying on the start strategy, with no exploration), all three
  as expected successes over the very same attempts (goal: >= 90% of the oracle).

Run by ``make bench``; appends its section to the report.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import orjson
import redis

from deploy.example_scraper import SimulatedWeb
from deploy.processes import Children
from deploy.scraper_client import ScraperClient, StrategyChoice
from deploy.topics import ensure_topics
from schemas.keys import Keys
from tests.benchmarks.run import env_of, publish, start_backends


def bench(attempts: int, rate: float, seed: int, break_p: float, recover_p: float, explore: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        children = Children(log_dir=Path(tmp) / "logs")
        try:
            settings = start_backends(children, Path(tmp))
            settings = settings.model_copy(update={"scrape_explore_rate": explore})
            ensure_topics(settings)
            web = SimulatedWeb(seed=seed, n_domains=50)
            env = env_of(settings) | {"EDDY_SCRAPE_STRATEGIES": ",".join(web.strategies),
                                      "EDDY_SCRAPE_EXPLORE_RATE": str(explore)}
            children.start_eddy("worker", ["worker"], env)
            _wait_for_worker(settings)
            return _run(settings, web, attempts, rate, seed, break_p, recover_p, explore)
        finally:
            children.stop()


def _wait_for_worker(settings, timeout_s: float = 60.0) -> None:  # noqa: ANN001
    r = redis.Redis.from_url(settings.redis_url)
    deadline = time.monotonic() + timeout_s
    while not r.hlen(Keys(settings.redis_prefix).workers):
        if time.monotonic() > deadline:
            raise TimeoutError("the worker got no partitions")
        time.sleep(0.1)


def _run(settings, web: SimulatedWeb, attempts: int, rate: float, seed: int,  # noqa: ANN001
         break_p: float, recover_p: float, explore: float) -> dict:
    rng = random.Random(seed)
    domains = list(web.domains)
    stable = set(domains[: len(domains) // 2])
    start = {d: web.best_strategy(d) for d in domains}
    count = dict.fromkeys(domains, 0)
    times: dict[str, list[float]] = {d: [] for d in domains}
    broke_at: dict[str, int] = {}
    applied_delays: list[int] = []
    broke_ts: dict[str, tuple[float, int]] = {}
    decision_delays: list[int] = []
    false = 0
    switches = 0
    lags: list[float] = []
    got = oracle = never = 0.0

    def on_switch(choice: StrategyChoice) -> None:
        nonlocal false, switches
        switches += 1
        if choice.ts is not None:
            lags.append(time.time() - choice.ts)
        d = choice.domain
        if d in stable and choice.from_strategy is not None and (
            web.success_probability(d, choice.strategy) <= web.success_probability(d, choice.from_strategy)
        ):
            false += 1
        if d in broke_ts and choice.ts is not None:
            # The decision's event time is the attempt that triggered it: count the
            # domain's attempts from the first on the broken strategy to that one.
            _, first = broke_ts.pop(d)
            decision_delays.append(sum(1 for t in times[d][first:] if t <= choice.ts))

    client = ScraperClient(settings, domains, default_strategy="requests", seed=seed, linger_s=0.02,
                           on_switch=on_switch, strategies=web.strategies, explore_rate=explore)
    with client:
        # Every domain starts on its best strategy, as a scraper team would set it up: the
        # selector takes the first strategy it sees on a domain as the starting choice.
        for d in domains:
            fields = web.attempt(d, start[d]) | {"ts": time.time()}
            client.report(fields)
        client.flush()
        began = time.perf_counter()
        for n in range(attempts):
            d = rng.choice(domains)
            if d not in stable:
                for s in web.strategies:
                    if web.is_broken(d, s):
                        if rng.random() < recover_p:
                            web.recover(d, s)
                    elif rng.random() < break_p and sum(not web.is_broken(d, x) for x in web.strategies) > 1:
                        web.break_strategy(d, s)
            decided = client.strategy_for(d) if client.current(d) else start[d]
            if web.is_broken(d, decided):
                if d not in broke_at:
                    broke_at[d] = count[d]
                    broke_ts[d] = (time.time(), count[d])
            elif d in broke_at:
                applied_delays.append(count[d] - broke_at.pop(d))
                broke_ts.pop(d, None)
            strategy = decided if rng.random() >= explore else rng.choice([s for s in web.strategies if s != decided])
            ts = time.time()
            fields = web.attempt(d, strategy) | {"ts": ts}
            client.report(fields)
            times[d].append(ts)
            count[d] += 1
            got += fields["success"]
            oracle += max(web.success_probability(d, s) for s in web.strategies)
            never += web.success_probability(d, start[d])
            ahead = (n + 1) / rate - (time.perf_counter() - began)
            client.poll(int(ahead * 1000) if ahead > 0 else 0)
        elapsed = time.perf_counter() - began
        client.flush()
    stable_attempts = sum(count[d] for d in stable)
    return {
        "attempts": attempts,
        "rate": attempts / elapsed,
        "breaks_of_strategy_in_use": len(applied_delays),
        "median_attempts_break_to_decision": statistics.median(decision_delays) if decision_delays else None,
        "median_attempts_break_to_applied": statistics.median(applied_delays) if applied_delays else None,
        "p90_attempts_break_to_applied": (sorted(applied_delays)[int(0.9 * len(applied_delays))]
                                          if applied_delays else None),
        "switches": switches,
        "median_s_attempt_to_applied": statistics.median(lags) if lags else None,
        "false_switches_per_10k_stable": false / stable_attempts * 1e4,
        "stable_attempts": stable_attempts,
        "success_rate": got / attempts,
        "oracle_success_rate": oracle / attempts,
        "never_switch_success_rate": never / attempts,
        "vs_oracle": got / oracle,
        "never_vs_oracle": never / oracle,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=60_000)
    parser.add_argument("--rate", type=float, default=800.0, help="attempts/s over all 50 domains")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--break-p", type=float, default=1 / 1000, help="per strategy, per attempt on its domain")
    parser.add_argument("--recover-p", type=float, default=1 / 400)
    parser.add_argument("--explore", type=float, default=0.05)
    parser.add_argument("--append", type=Path, help="append the markdown section here")
    args = parser.parse_args()
    r = bench(args.attempts, args.rate, args.seed, args.break_p, args.recover_p, args.explore)
    print(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode())
    section = f"""
## Self-healing scrapers (through Kafka)

`python -m tests.benchmarks.scraping_bench --attempts {args.attempts} --rate {args.rate:g} --seed {args.seed}`:
50 domains x 4 strategies, half stable, on the others each strategy breaks with p={args.break_p:.5f} and
recovers with p={args.recover_p:.4f} per attempt on its domain; the real scraper client explores
{args.explore:.0%} of attempts; one worker; {r['rate']:.0f} attempts/s achieved
({r['rate'] / 50:.1f} per domain per second).

| figure | Eddy | baseline (same attempts) | goal |
|---|---|---|---|
| median attempts, break of the strategy in use -> decision | {r['median_attempts_break_to_decision']} | - | - |
| median attempts, break -> switch applied at the scraper | {r['median_attempts_break_to_applied']} (p90 {r['p90_attempts_break_to_applied']}) | never switching: until it recovers | <= 8 |
| false switches per 10,000 attempts on stable domains | {r['false_switches_per_10k_stable']:.2f} ({r['stable_attempts']} attempts) | - | <= 1 |
| success rate | {r['success_rate']:.3f} ({r['vs_oracle']:.1%} of oracle) | oracle {r['oracle_success_rate']:.3f}; never switching {r['never_switch_success_rate']:.3f} ({r['never_vs_oracle']:.1%} of oracle) | >= 90% of oracle |

{r['breaks_of_strategy_in_use']} breaks hit the strategy in use; {r['switches']} switches in all.
"""
    publish(section, args.append)


if __name__ == "__main__":
    main()
