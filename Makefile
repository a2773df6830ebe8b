# Two commands do all set-up on a fresh machine:
#   make materialize   # build .venv, then materialise the whole asset graph
#   make test          # build .venv, install PostgreSQL/Chromium if missing, run pytest
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: venv materialize dev lint test bench clean

$(VENV)/.installed: pyproject.toml testkit/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]" -e ./testkit   # the test kit: tests and benches, not the wheel
	touch $@

venv: $(VENV)/.installed

$(DAGSTER_HOME):
	mkdir -p $@

materialize: venv $(DAGSTER_HOME)
	$(VENV)/bin/dagster asset materialize -m cfrec_assets.definitions --select '*'

dev: venv $(DAGSTER_HOME)
	$(VENV)/bin/dagster dev

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

test: venv
	scripts/install-system-deps.sh
	$(PY) -m pytest -q

bench: venv
	for script in graph_bench supabase_bench retrain_latency_bench serving_bench mapping_report; do $(PY) bench/$$script.py || exit 1; done

clean:
	rm -rf $(VENV) .dagster_home data/cache data/movielens data/assets data/models
