"""An example self-healing scraper: scrapes a simulated web and follows Eddy's decisions.

:class:`SimulatedWeb` stands in for the sites: the simulator's domains, each strategy with
the success probability the simulator gives it and a latency of its own, strategies that
break (a site changes its markup or starts blocking) and recover at random times. Every
break and recovery is recorded with the clock and the attempt count, so a benchmark can
measure how long Eddy took to move the scrapers off a broken strategy; the oracle
:meth:`SimulatedWeb.best_strategy` says what the ideal choice was. :func:`run` is the
scraper loop — pick a domain, ask the :class:`~deploy.scraper_client.ScraperClient` for
a strategy, scrape, report, follow switches — and ``eddy scraper`` runs it live.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from rich.console import Console

from deploy.scraper_client import ScraperClient, StrategyChoice
from deploy.simulator import _BLOCKED, _FAILURES, SimConfig, Simulator
from schemas.settings import Settings

__all__ = ["RunStats", "SimulatedWeb", "WebChange", "run", "run_example"]


@dataclass(frozen=True)
class WebChange:
    """A strategy broke or recovered on a domain.

    ``at_s`` is the web's clock (seconds advanced so far) and ``attempt`` the number of
    attempts made before the change, so the first attempt to meet it has that index.
    """

    domain: str
    strategy: str
    kind: Literal["break", "recover"]
    at_s: float
    attempt: int


class SimulatedWeb:
    """Domains whose strategies succeed, fail, break and recover, all from one seed.

    Parameters
    ----------
    seed, n_domains
        Passed to :class:`~deploy.simulator.Simulator`, whose domains and per-strategy
        success probabilities (and broken-strategy behaviour) this web uses.
    break_per_attempt, recover_per_attempt
        On each attempt on a domain, the chance each of its working strategies breaks and
        each broken one recovers.
    break_per_s, recover_per_s
        The same as rates per second of :meth:`advance` time, for live runs.
    keep_one_working
        Skip a break that would leave a domain with no working strategy, so there is
        always a right answer to switch to.
    """

    def __init__(
        self,
        seed: int = 0,
        n_domains: int = 10,
        *,
        break_per_attempt: float = 0.0,
        recover_per_attempt: float = 0.0,
        break_per_s: float = 0.0,
        recover_per_s: float = 0.0,
        keep_one_working: bool = True,
    ) -> None:
        for name, p in (("break_per_attempt", break_per_attempt), ("recover_per_attempt", recover_per_attempt)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p}")
        if break_per_s < 0 or recover_per_s < 0:
            raise ValueError("break_per_s and recover_per_s must not be negative")
        # Breaks and recoveries are ours to decide, so the simulator's own are switched off.
        self.sim = Simulator(
            SimConfig(seed=seed, n_domains=n_domains, strategy_break_prob=0.0, strategy_recover_prob=0.0)
        )
        self.domains: list[str] = list(self.sim.domains)
        self.strategies: tuple[str, ...] = self.sim.config.strategies
        self.break_per_attempt = break_per_attempt
        self.recover_per_attempt = recover_per_attempt
        self.break_per_s = break_per_s
        self.recover_per_s = recover_per_s
        self.keep_one_working = keep_one_working
        # Seeded apart from the simulator's generator, so the web's draws are not a replay of
        # the draws that built the simulated world.
        self._rng = random.Random(seed * 1_000_003 + n_domains)
        # The simulator has one latency law for every strategy; real strategies differ
        # (a headless browser is slower than an HTTP client), so each gets its own median.
        self._median_ms = {
            (d, s): 900.0 * self._rng.lognormvariate(0.0, 0.5) for d in self.domains for s in self.strategies
        }
        self.changes: list[WebChange] = []
        self.attempts = 0
        self.elapsed_s = 0.0

    # -- ground truth --------------------------------------------------------------------

    def success_probability(self, domain: str, strategy: str) -> float:
        """The chance an attempt with ``strategy`` succeeds on ``domain`` right now."""
        self._check(domain, strategy)
        return self.sim.success_probability(domain, strategy)

    def best_strategy(self, domain: str) -> str:
        """The oracle: the strategy with the highest success probability right now."""
        return self.sim.best_strategy(domain)

    def is_broken(self, domain: str, strategy: str) -> bool:
        return self.sim.is_broken(domain, strategy)

    def median_latency_ms(self, domain: str, strategy: str) -> float:
        """The typical latency of a successful attempt with ``strategy`` on ``domain``."""
        self._check(domain, strategy)
        return self._median_ms[(domain, strategy)]

    # -- changes -------------------------------------------------------------------------

    def break_strategy(self, domain: str, strategy: str) -> None:
        """Break ``strategy`` on ``domain`` now (recorded in :attr:`changes`)."""
        self._check(domain, strategy)
        if not self.sim.is_broken(domain, strategy):
            self.sim.break_strategy(domain, strategy)
            self.changes.append(WebChange(domain, strategy, "break", self.elapsed_s, self.attempts))

    def recover(self, domain: str, strategy: str) -> None:
        """Make a broken ``strategy`` on ``domain`` work again (recorded in :attr:`changes`)."""
        self._check(domain, strategy)
        if self.sim.is_broken(domain, strategy):
            self.sim.recover(domain, strategy)
            self.changes.append(WebChange(domain, strategy, "recover", self.elapsed_s, self.attempts))

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: strategies break and recover at the per-second rates."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        if seconds == 0:
            return
        self.elapsed_s += seconds
        if self.break_per_s or self.recover_per_s:
            p_break = -math.expm1(-self.break_per_s * seconds)
            p_recover = -math.expm1(-self.recover_per_s * seconds)
            for domain in self.domains:
                self._churn(domain, p_break, p_recover)

    def _churn(self, domain: str, p_break: float, p_recover: float) -> None:
        # One draw per strategy in a fixed order, whatever the outcome, so the same seed
        # gives the same history even when a break is skipped.
        for strategy in self.strategies:
            draw = self._rng.random()
            if self.sim.is_broken(domain, strategy):
                if draw < p_recover:
                    self.recover(domain, strategy)
            elif draw < p_break:
                working = sum(not self.sim.is_broken(domain, s) for s in self.strategies)
                if not (self.keep_one_working and working <= 1):
                    self.break_strategy(domain, strategy)

    # -- scraping ------------------------------------------------------------------------

    def next_domain(self) -> str:
        """The domain a scraper visits next (uniformly at random)."""
        return self._rng.choice(self.domains)

    def attempt(self, domain: str, strategy: str) -> dict[str, Any]:
        """Scrape ``domain`` with ``strategy``: the attempt's fields, ready for ``report``.

        The outcome follows the simulator: a success brings status 200, a latency around
        the strategy's median and some items; a broken strategy is blocked (403, captcha);
        a working one fails now and then in every ordinary way (timeouts, 5xx, parse errors).
        """
        self._check(domain, strategy)
        if self.break_per_attempt or self.recover_per_attempt:
            self._churn(domain, self.break_per_attempt, self.recover_per_attempt)
        self.attempts += 1
        rng = self._rng
        fields: dict[str, Any] = {"domain": domain, "strategy": strategy}
        if rng.random() < self.sim.success_probability(domain, strategy):
            latency = rng.lognormvariate(math.log(self._median_ms[(domain, strategy)]), 0.5)
            found = int(rng.lognormvariate(math.log(12.0), 0.6))
            return fields | {"success": True, "latency_ms": latency, "http_status": 200, "items_found": found}
        error, status = rng.choice(_BLOCKED if self.sim.is_broken(domain, strategy) else _FAILURES)
        latency = rng.lognormvariate(math.log(30_000.0 if error == "timeout" else 600.0), 0.3)
        fields |= {"success": False, "latency_ms": latency, "error_type": error, "items_found": 0}
        if status is not None:
            fields["http_status"] = status
        return fields

    def _check(self, domain: str, strategy: str) -> None:
        if domain not in self.sim.current_strategy:
            raise ValueError(f"unknown domain {domain!r}")
        if strategy not in self.strategies:
            raise ValueError(f"unknown strategy {strategy!r}; the web knows {', '.join(self.strategies)}")


@dataclass
class RunStats:
    """What a :func:`run` did: attempts, successes, how often it used the oracle's best
    strategy and how often it explored (used another strategy than the decided one)."""

    attempts: int = 0
    successes: int = 0
    on_best: int = 0
    explored: int = 0
    elapsed_s: float = 0.0

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else 0.0

    @property
    def best_share(self) -> float:
        return self.on_best / self.attempts if self.attempts else 0.0


def run(
    client: ScraperClient,
    web: SimulatedWeb,
    rate: float,
    duration: float | None = None,
    limit: int | None = None,
    *,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    progress: Callable[[RunStats], None] | None = None,
    progress_every_s: float = 10.0,
) -> RunStats:
    """Scrape ``web`` through ``client`` at ``rate`` attempts/s until ``duration`` s,
    ``limit`` attempts or ``stop`` is set (none given: forever); ``rate`` 0 means as fast
    as possible.

    The web's clock follows ``clock``, so per-second breaks happen in real time. Switches
    are polled while waiting for the next attempt's turn; the caller closes the client.
    """
    stats = RunStats()
    started = last = last_progress = clock()
    while (limit is None or stats.attempts < limit) and not (stop is not None and stop.is_set()):
        now = clock()
        if duration is not None and now - started >= duration:
            break
        web.advance(now - last)
        last = now
        domain = web.next_domain()
        decided = client.strategy_for(domain)
        strategy = client.choose(domain)
        fields = web.attempt(domain, strategy)
        client.report(fields)
        stats.attempts += 1
        stats.successes += fields["success"]
        stats.on_best += strategy == web.best_strategy(domain)
        stats.explored += strategy != decided
        if rate > 0:
            # Pace against the start, so a slow attempt is caught up rather than lost.
            _wait_polling(client, started + stats.attempts / rate, clock)
        elif stats.attempts % 100 == 0:
            client.poll(0)
        if progress is not None and clock() - last_progress >= progress_every_s:
            last_progress = clock()
            stats.elapsed_s = last_progress - started
            progress(stats)
    stats.elapsed_s = clock() - started
    return stats


def _wait_polling(client: ScraperClient, until: float, clock: Callable[[], float]) -> None:
    # Waiting is spent reading switches, so a decision is applied before the next attempt.
    client.poll(0)
    while (remaining := until - clock()) > 0:
        client.poll(timeout_ms=max(1, int(remaining * 1000)))


def run_example(
    settings: Settings,
    *,
    rate: float,
    n_domains: int,
    seed: int,
    duration: float,
    break_per_s: float,
    recover_per_s: float,
    console: Console,
) -> RunStats:
    """``eddy scraper``: scrape the simulated web live until ``duration`` (0 = Ctrl-C / SIGTERM)."""
    web = SimulatedWeb(
        seed=seed, n_domains=n_domains, break_per_s=break_per_s, recover_per_s=recover_per_s
    )

    def show(choice: StrategyChoice) -> None:
        best = web.best_strategy(choice.domain)
        verdict = "[green]right[/]" if choice.strategy == best else f"[yellow]best is {best}[/]"
        console.log(f"switch {choice.domain}: {choice.from_strategy} -> {choice.strategy} "
                    f"({choice.reason}) {verdict}")

    def progress(stats: RunStats) -> None:
        broken = sum(c.kind == "break" for c in web.changes)
        console.log(f"{stats.attempts} attempts ({stats.attempts / max(stats.elapsed_s, 1e-9):.0f}/s), "
                    f"success {stats.success_rate:.1%}, on the best strategy {stats.best_share:.1%}, "
                    f"{broken} breaks so far")

    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    with ScraperClient(
        settings, web.domains, default_strategy=web.strategies[0], seed=seed,
        on_switch=show, scraper_id=f"example-{seed}", strategies=web.strategies,
        explore_rate=settings.scrape_explore_rate,
    ) as client:
        # Once connected, Ctrl-C and the SIGTERM `eddy up` stops its children with end the
        # loop cleanly, so close() still sends the attempts buffered.
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        client.catch_up()
        stats = run(client, web, rate, duration or None, stop=stop, progress=progress)
    progress(stats)
    return stats
