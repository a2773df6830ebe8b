# Two commands do all set-up on a fresh machine:
#   make materialize   # build .venv, then materialise the whole asset graph (dg launch)
#   make test          # build .venv, install PostgreSQL/Chromium if missing, run pytest
# Production: make serve (deploy/serve.sh: daemon + webserver on deploy/dagster.yaml, DAGSTER_PG_URL).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# dg compares the active virtualenv with the project's; the Makefile runs .venv's tools directly.
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

.PHONY: venv materialize dev serve lint test bench clean

$(VENV)/.installed: pyproject.toml serving/pyproject.toml testkit/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e "./serving[s3,pickle]" -e ".[dev]" -e ./testkit   # serving: the app's own distribution; testkit: tests and benches, not the wheel
	touch $@

venv: $(VENV)/.installed

$(DAGSTER_HOME)/dagster.yaml:  # the local instance (SQLite); production uses deploy/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	printf 'telemetry:\n  enabled: false\n' > $@

materialize: venv $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dg launch --job train_and_deploy

dev: venv $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dg dev

serve: venv
	deploy/serve.sh

lint: venv $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/dg check defs

test: venv
	scripts/install-system-deps.sh
	$(PY) -m pytest -q

bench: venv
	for script in graph_bench supabase_bench retrain_latency_bench serving_bench publish_bench recommendations_bench seed_coverage_report mapping_report fault_bench; do $(PY) bench/$$script.py || exit 1; done

clean:
	rm -rf $(VENV) .dagster_home data/cache data/assets data/models data/tuning data/serving-cache
