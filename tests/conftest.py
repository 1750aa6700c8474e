"""Shared fixtures: one MLflow store per session, tiny generated MNIST-like data, the real MNIST mirror.
Helpers that are not fixtures live in helpers.py.

The suite runs on pytest-xdist workers (pyproject.toml): one per core and one more, since its slow
tests wait on servers, nodes and DVC for about a quarter of the time (`pytest_xdist_auto_num_workers`
below). Tests that share a module-scoped
fixture carry one `xdist_group`, so that it is built once: test_cluster's cluster, test_pipeline_e2e's
project (changed test by test), test_mlflow_server's server and sweep, and each capture condition of
test_predict. Models trained for several modules are built once per run for all workers
(helpers.trained_once)."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

# isort: off
import mnist_np  # noqa: F401  (first: it sets up the portable numerics before anything loads NumPy)

# isort: on
import pytest

from helpers import REPO, Trained, migrated_store, project_config, trained_once, write_tiny_mnist

TEST_JUDGE_COLUMNS = 500  # the judge of touching digits the tests' data gets (the pipeline's: data.judge_columns)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` (pyproject.toml): for the whole suite, one worker more than the cores. Its slow tests
    spend about a quarter of their time waiting (servers and Ray nodes restarting, DVC, polls), and a
    third worker fills those waits: make test on 2 cores took 7 min 46 s instead of 8 min 12 s, the same
    checkout one after the other (2026-12-06). The quick tests do not wait: `-m "not slow"` keeps one per core,
    where another worker would only add its ~3 s of imports."""
    if config.option.numprocesses != "auto":
        return None
    cores = len(os.sched_getaffinity(0))
    return cores if config.option.markexpr == "not slow" else cores + 1


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session):
    """No garbage collection while the test modules import MLflow, pandas, SciPy and matplotlib (each
    xdist worker imports them all as it collects, and a full collection meanwhile walks every object
    they have made so far); then what they made moves out of the collector's sight (as each sweep
    job does, sweep_job.run_job), so the collections during the tests walk only the tests' own
    objects. make test-fast: 16.2-17.9 s against 17.0-22.3 s without (3 runs each, alternated)."""
    gc.disable()
    try:
        return (yield)
    finally:
        gc.collect()
        gc.freeze()
        gc.enable()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with slow tests first (each module's tests kept together and in order), so that the
    quick in-process tests fill the workers' last minutes instead of one worker finishing a long
    test alone while the other waits."""
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow)


@pytest.fixture(scope="session", autouse=True)
def _session_mlflow_store(tmp_path_factory):
    """Tests never write into the repository's mlflow.db. One store for the session, so its schema
    is copied from a migrated one; tests that count runs use an experiment or a store of their own."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = migrated_store(tmp_path_factory.mktemp("mlflow") / "mlflow.db")
    yield
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture(autouse=True)
def _restore_tracking_uri():
    """Undo a test's own tracking URI (mlflow.set_tracking_uri sets MLflow's and the environment's)."""
    session_uri = os.environ["MLFLOW_TRACKING_URI"]
    yield
    os.environ["MLFLOW_TRACKING_URI"] = session_uri
    if "mlflow" in sys.modules:  # else no test set MLflow's own URI
        sys.modules["mlflow"].set_tracking_uri(session_uri)


@pytest.fixture
def tiny_mnist(tmp_path):
    """(mirror directory with tiny IDX files under the standard names, the project config, 2 epochs)."""
    write_tiny_mnist(tmp_path / "mirror")
    return tmp_path / "mirror", project_config("data.val_size=20", "train.epochs=2")


@pytest.fixture(scope="session")
def mnist_mirror() -> Path:
    """The real MNIST files: $MNIST_MIRROR, else ../shared/mnist beside the repository."""
    path = Path(os.environ.get("MNIST_MIRROR") or REPO.parent / "shared" / "mnist").resolve()
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"real MNIST not found in {path}; set MNIST_MIRROR to a directory with the four original files")
    return path


@pytest.fixture(scope="session")
def trained_default(tmp_path_factory, worker_id, mnist_mirror) -> Trained:
    """The default configuration trained on real MNIST, once per test run, its data with a judge of
    touching digits smaller than the pipeline's (TEST_JUDGE_COLUMNS: ~8 s against ~3 min)."""
    return trained_once(tmp_path_factory, worker_id, mnist_mirror, "default", judge_columns=TEST_JUDGE_COLUMNS)


@pytest.fixture(scope="session")
def trained_best(tmp_path_factory, worker_id, mnist_mirror) -> Trained:
    """conf/experiment/best.yaml's first 3 epochs (of 40) on real MNIST, once per test run (about 15 s;
    test_accuracy holds them to the recorded full run)."""
    return trained_once(tmp_path_factory, worker_id, mnist_mirror, "best", "+experiment=best", "train.epochs=3")
