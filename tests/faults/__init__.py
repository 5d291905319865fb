"""Fault-injection, load and abuse trials: each kills, starves or feeds garbage to a real
broker, Redis and Eddy processes on purpose and checks, against a known truth, that
nothing was lost or applied twice. ``python -m tests.faults --help``; figures and bounds
in docs/reliability.md."""

#: The trials, in the order the runner takes them; each module has ``run(scale) -> TrialResult``.
TRIALS = ("ledger", "churn", "redis_outage", "broker_outage", "poison", "sustained")
