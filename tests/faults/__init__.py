"""Fault-injection, load and abuse trials: each kills, starves or feeds garbage to a real
broker, Redis and Eddy processes on purpose and checks, against a known truth, that
nothing was lost or applied twice. ``python -m tests.faults --help``; figures and bounds
in docs/reliability.md."""
