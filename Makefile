# Every command the README uses. A fresh clone needs only Python 3.11 and make:
# the first target that needs it creates .venv and installs Eddy with its test tools.
VENV ?= .venv
PY := $(VENV)/bin/python
EDDY := $(VENV)/bin/eddy

.PHONY: install run test unit integration bench faults schemas clean

$(VENV)/.installed: pyproject.toml
	@# The web app's browser tests drive Debian's chromium; nothing downloads a browser.
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

## Run Eddy on this machine: broker, Redis, worker, API and a demo producer (Ctrl-C stops all).
run: install
	$(EDDY) up

## The whole test suite: unit tests, then integration tests on a real broker and Redis.
test: install
	$(PY) -m pytest

unit: install
	$(PY) -m pytest online_models schemas streams api deploy tests/unit

integration: install
	$(PY) -m pytest tests/integration

## Benchmarks, each beside its baseline in the same run; figures go to docs/benchmarks.md.
bench: install
	@# The serving benchmark loads the API with wrk (C, one thread), not a Python client.
	command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)
	$(PY) -m tests.benchmarks.run --write docs/benchmarks.md
	$(PY) -m tests.benchmarks.recs_bench --append docs/benchmarks.md
	$(PY) -m tests.benchmarks.scraping_bench --append docs/benchmarks.md
	$(PY) -m tests.benchmarks.bids_bench --append docs/benchmarks.md
	$(PY) -m tests.benchmarks.replay_bench --append docs/benchmarks.md

## Fault-injection trials at full size (kill -9, churn, outages, poison, 30 min of load:
## about 45 minutes); one line of figures each, non-zero exit when one misses its bound.
## Figures in docs/reliability.md; `$(PY) -m tests.faults --short` is the CI version.
faults: install
	$(PY) -m tests.faults --full

## Regenerate the committed JSON Schema of the events.
schemas: install
	$(EDDY) schemas --out schemas/events.schema.json

clean:
	rm -rf $(VENV) .eddy .pytest_cache build *.egg-info
