# Two commands do all set-up on a fresh machine:
#   make materialize   # build .venv, then materialise the whole asset graph (dg launch)
#   make test          # build .venv, install PostgreSQL/Chromium if missing, run pytest
# Production: make serve (deploy/serve.sh: daemon + webserver on deploy/dagster.yaml, DAGSTER_PG_URL).
#
# Dev and production never share an instance, nor (unless you say so) data:
#   make materialize / dev / lint   instance DEV_HOME (SQLite),   data CFREC_DATA_DIR (default data/)
#   make serve                      instance PROD_HOME (PostgreSQL), data PROD_DATA (default data/prod/;
#                                   `make serve PROD_DATA=$PWD/data` trains on, and deploys to, dev's data)
# A DAGSTER_HOME in the environment is ignored here: each target sets the one it owns. The folders
# (and VENV) change only on the command line, never through a like-named environment variable.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEV_HOME := $(CURDIR)/.dagster_home
PROD_HOME := $(CURDIR)/.dagster_prod
PROD_DATA := $(CURDIR)/data/prod
# dg compares the active virtualenv with the project's; the Makefile runs .venv's tools directly.
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: venv dev-instance materialize dev serve lint test bench clean

$(VENV)/.installed: pyproject.toml serving/pyproject.toml testkit/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e "./serving[s3,pickle]" -e ".[dev,spark]" -e ./testkit   # serving: the app's own distribution; spark: its tests run too; testkit: tests and benches, not the wheel
	touch $@

venv: $(VENV)/.installed

materialize dev lint bench: export DAGSTER_HOME := $(DEV_HOME)
serve: export DAGSTER_HOME := $(PROD_HOME)
serve: export CFREC_DATA_DIR := $(PROD_DATA)
serve: export CFREC_VENV := $(abspath $(VENV))

# The local instance (SQLite). An older `make serve` linked deploy/dagster.yaml here, which made
# `make dev` need (and write to) the production database: that link is replaced.
dev-instance:
	@mkdir -p $(DEV_HOME)
	@if [ "$$(readlink -f $(DEV_HOME)/dagster.yaml)" = "$$(readlink -f deploy/dagster.yaml)" ]; then \
		rm $(DEV_HOME)/dagster.yaml; echo "$(DEV_HOME)/dagster.yaml pointed at the production instance: replaced"; fi
	@[ -e $(DEV_HOME)/dagster.yaml ] || printf 'telemetry:\n  enabled: false\n' > $(DEV_HOME)/dagster.yaml

materialize: venv dev-instance
	$(VENV)/bin/dg launch --job train_and_deploy

dev: venv dev-instance
	$(VENV)/bin/dg dev -h "$${CFREC_HOST:-127.0.0.1}" -p "$${CFREC_PORT:-3000}"

serve: venv
	deploy/serve.sh

lint: venv dev-instance
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
	rm -rf $(VENV) .dagster_home data/cache data/assets data/models data/tuning data/serving-cache data/spark-staging
