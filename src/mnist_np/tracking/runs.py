"""What every run carries besides its numbers: tags naming the code and data, batched per-epoch metrics."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import mlflow
import mlflow.data
from mlflow.entities import Metric, RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from ..errors import known_failure

# What decides a run's result besides its params: a change here makes the run's code differ from
# its commit. DVC's outputs (reports/) and params.yaml, which `dvc exp run -S` rewrites, do not count.
CODE_PATHS = ("src", "pipelines", "conf", "dvc.yaml", "pyproject.toml", "requirements.lock")
DATA_TAG = "data.sha256"  # {file name: SHA-256} of the raw downloads and the processed train/val splits


def git_tags(root: Path) -> dict[str, str]:
    """The commit the code came from (MLflow's own tag) and whether the code differed from it."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    # One git call for both (each costs a few ms of every run): the header line
    # "# branch.oid <commit>", then one line per changed tracked file.
    status = git("status", "--porcelain=v2", "--branch", "--untracked-files=no", "--", *CODE_PATHS)
    if status is None:
        return {}
    lines = status.splitlines()
    commit = next((line.split()[2] for line in lines if line.startswith("# branch.oid ")), "(initial)")
    if commit == "(initial)":
        return {}
    dirty = any(not line.startswith("#") for line in lines)
    return {MLFLOW_GIT_COMMIT: commit, "git_dirty": str(dirty).lower()}


def run_tags(root: Path, data_checksums: dict[str, str], entry_point: str) -> dict[str, str]:
    tags = {"entry_point": entry_point, **git_tags(root)}
    # One tag, not one per file: the UI lists every tag of a run, truncated (eight hashes were eight rows).
    tags[DATA_TAG] = json.dumps(data_checksums)
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


FAILURE_TAG = "failure"


def log_dataset(x, y, sha256: str, path: Path, name: str, context: str) -> None:
    """Record a split as the active run's MLflow dataset input (the UI's Dataset column): its name,
    the SHA-256 of its file as digest, where it lives, its shape."""
    with warnings.catch_warnings():
        # MLflow has two equivalent source types registered for local paths and says so: noise.
        warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
        dataset = mlflow.data.from_numpy(x, targets=y, source=str(path), name=name, digest=sha256[:16])
    for attempt in range(3):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except mlflow.exceptions.MlflowException:
            # Parallel jobs of a sweep record the same dataset at once, and the store lets only the
            # first insert it; after that, the dataset exists and logging it again succeeds.
            if attempt == 2:
                raise
            time.sleep(0.2)


@contextlib.contextmanager
def ended_on_failure() -> Iterator[None]:
    """Inside an active run: a user error, or a known failure of the machine (a full disk, a read-only
    or full store: errors.known_failure, raised on as that UserError), is recorded in the run's
    `failure` tag (the run then ends FAILED); Ctrl-C and SIGTERM end it KILLED."""
    try:
        yield
    except KeyboardInterrupt:
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    except Exception as exc:
        run = mlflow.active_run()
        known = known_failure(exc, f"the run's outputs or its MLflow artifacts ({run.info.artifact_uri})")
        if known is None:
            raise
        with contextlib.suppress(Exception):  # a full or read-only store may not take the tag either
            mlflow.set_tag(FAILURE_TAG, str(known)[:5000])
        if known is exc:
            raise
        raise known from exc


class EpochMetrics:
    """Per-epoch metrics (and the run's totals, at step 0) for the active run, sent in batches
    at most every `interval_s` seconds.

    A write to the SQLite store costs ~7 ms, 4% of a default epoch (0.17 s); one batch every 2 s
    costs 0.4% of training (benchmarks/metric_batches.py), and a process killed outright loses at
    most its last 2 s of epochs. Call flush() when training ends, also when it fails.
    """

    def __init__(self, interval_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self.pending: list[Metric] = []
        self.last_sent = time.monotonic()

    def log(self, metrics: dict[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        self.pending += [Metric(key, float(value), stamp, step) for key, value in metrics.items()]
        if time.monotonic() - self.last_sent >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=self.pending)
        self.pending, self.last_sent = [], time.monotonic()
