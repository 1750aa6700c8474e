# One command for the main job (make run) and one for the tests (make test).
# make run creates .venv from the pinned requirements.lock (the product) on first use; make test and
# the other development targets add requirements-dev.lock (the tests' tools and the cluster extra).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup setup-dev run test test-fast lint format params exps results report screenshots cluster-up cluster-down cluster-status lock clean

setup: $(VENV)/.installed .dvc/offline_plots.html

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# `dvc plots show`'s page with Vega inlined (.dvc/config names it): it draws without a network.
.dvc/offline_plots.html: $(VENV)/.installed pipelines/offline_plots.py
	$(BIN)/python pipelines/offline_plots.py --out $@

# The product plus pytest, ruff, Playwright and the cluster extra (Ray, its launcher, psycopg2).
setup-dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.lock
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	touch $@

# The whole pipeline: download, normalize, train, evaluate (only what changed reruns).
run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	$(BIN)/python pipelines/report.py --pipeline

# pytest and each of its workers rewrite the asserts of ~200 modules (Hypothesis, Hydra and other
# plugins' packages included) and compile ours at every start unless it may keep the result
# (__pycache__): an environment with PYTHONDONTWRITEBYTECODE set costs 2-3 s per process and run.
PYTEST := PYTHONDONTWRITEBYTECODE= PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

# Every test, including the slow ones that train on real MNIST and run real `dvc repro`.
test: setup-dev
	$(PYTEST)

# The in-process tests only (no training on real MNIST, DVC pipeline, server or MLflow interpreter).
test-fast: setup-dev
	$(PYTEST) -m "not slow"

# Lint and formatting (ruff, configured in pyproject.toml); CI runs `make lint` before the tests.
lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Select a configuration: overrides in ARGS (e.g. make params ARGS=+experiment=best) are recorded in
# conf/selection.yaml, which dvc exp run -S and sweeps compose too; params.yaml is its composition.
# Without ARGS: back to conf/config.yaml as it is. Also run after editing conf/.
params: setup
	$(BIN)/python pipelines/compose_params.py $(ARGS)

# The DVC experiments as a table one can read: best test accuracy first, only what differs between
# them, no dependency hashes (pipelines/exps.py). EXPS_ARGS=--csv (or --md) for files. Hydra sweeps
# are not DVC experiments: they live in MLflow (pipelines/compare.py).
exps: setup
	$(BIN)/python pipelines/exps.py $(EXPS_ARGS)

# The README's results table: a real sweep (needs data/processed from make run), then its table.
results: setup
	$(BIN)/python pipelines/sweep.py -m model.hidden_size=10,64,256,1024 train.lr=0.05,0.1 \
	    train.batch_size=32,128 train.epochs=10
	$(BIN)/python pipelines/compare.py --sweep latest --markdown docs/results.md --no-plots

# The newest sweep's HTML report, rebuilt in its folder (and logged to its parent run), and the link
# to its runs table in the MLflow UI (pipelines/report.py).
report: setup
	$(BIN)/python pipelines/report.py $(REPORT_ARGS)

# The README's MLflow UI screenshots (docs/img/), taken by the browser test of a sweep's printed link
# in the distribution's Chromium, and docs/serving.md's pages with what mnist-predict found on them.
screenshots: setup-dev
	MNIST_NP_SCREENSHOTS=$(CURDIR)/docs/img $(PYTEST) -n 0 tests/test_mlflow_server.py -k printed_link
	MNIST_NP_SCREENSHOTS=$(CURDIR)/docs/img/reading $(PYTEST) -n 0 tests/test_predict.py -k lines_box_and_reading

# A local stand-in for a team's cluster, on 127.0.0.1: PostgreSQL, an MLflow server on it, a Ray head
# and a worker node; writes .cluster.env (source it). cluster-down stops all of it (docs/scaling.md).
# CLUSTER_ARGS="--dir D --env-file F" keeps a second one apart (the tests do).
cluster-up: setup-dev
	$(BIN)/python cluster/local.py up $(CLUSTER_ARGS)

cluster-down: setup-dev
	$(BIN)/python cluster/local.py down $(CLUSTER_ARGS)

# Each part up or down (and why); RESTART=1 starts again, on the same ports, what is down
# (RESTART="ray_worker mlflow": only those of the parts).
cluster-status: setup-dev
	$(BIN)/python cluster/local.py status $(if $(RESTART),--restart $(filter-out 1,$(RESTART))) $(CLUSTER_ARGS)

# Re-pin both lock files from the ranges in pyproject.toml: the product's, then the development one
# (the tests' tools and the cluster extra) at the product's versions, so that the tests check what
# `make run` runs; only joblib and cloudpickle differ (the Ray launcher's pins, tests/test_layout.py).
lock: setup
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --no-header -o requirements.lock
	grep -v -E '^(joblib|cloudpickle)==' requirements.lock | grep '==' > $(VENV)/product-pins.txt
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra cluster --python-version 3.11 --no-header \
	    -c $(VENV)/product-pins.txt -o requirements-dev.lock

clean:
	rm -rf $(VENV)
