# Two commands for a fresh clone: `make run` and `make test`. Both create the virtual
# environment and the state folder (HRM_HOME) they need.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HRM_HOME ?= $(CURDIR)/.hrm
export DAGSTER_HOME ?= $(HRM_HOME)/dagster

.PHONY: setup run test paper ui stack bench lint

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	# The CPU build of torch first, so the range in pyproject.toml is already satisfied.
	$(BIN)/pip install "torch==2.13.0"
	$(BIN)/pip install -e ".[dev,aws,k8s]"
	# numba's kernels compiled once into its cache, not by every test worker and run at once
	$(BIN)/python -m hrm_core.workflows.warm
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/hrm-trading run

# One pytest worker per core (tests/conftest.py gives each one torch thread); the 25 slowest tests
# are listed at the end.
test: setup
	$(BIN)/pytest -q -n auto --durations=25

# After `make run`: the sample's last year, replayed bar by bar into the paper account.
paper: setup
	$(BIN)/hrm-trading paper

ui: setup
	mkdir -p $(DAGSTER_HOME)
	@echo "Dagster UI: http://127.0.0.1:3000   MLflow UI: http://127.0.0.1:5000   (Ctrl-C stops both)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(HRM_HOME)/mlflow.db --host 127.0.0.1 --port 5000 & \
	MLFLOW_PID=$$!; trap "kill $$MLFLOW_PID" EXIT; \
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The production topology on this machine (Postgres, S3, MLflow server, Dagster daemon and UI);
# `.venv/bin/hrm-trading stack down` stops it.
stack: setup
	$(BIN)/hrm-trading stack up

bench: setup
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_model.py
	$(BIN)/python benchmarks/bench_backtest.py
	$(BIN)/python benchmarks/bench_learning.py
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_data_job.py
	$(BIN)/python benchmarks/bench_warehouse.py
	$(BIN)/python benchmarks/bench_rl.py
	$(BIN)/python benchmarks/bench_production.py
	$(BIN)/python benchmarks/bench_serving.py
	$(BIN)/python benchmarks/bench_run.py

# ruff, and the import contract in pyproject.toml (the layers, no cycles, no Dagster in hrm_core).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
