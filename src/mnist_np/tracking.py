"""Where MLflow runs go, the tags every run carries, and how per-epoch metrics reach the store.

One store for every entry point: $MLFLOW_TRACKING_URI when set, else
sqlite:///<repository root>/mlflow.db with artifacts in <repository root>/mlartifacts.
DVC runs queued experiments in copies under <repo>/.dvc/tmp/exps/; the repository root is
resolved past that, so those runs land in the same store as everything else.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from .errors import UserError

STORE_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
_DVC_TEMP = (".dvc", "tmp", "exps")


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The repository a run belongs to, even when DVC runs it in a temporary copy."""
    path = Path(start or os.environ.get("DVC_ROOT") or Path.cwd()).resolve()
    parts = path.parts
    for i in range(len(parts) - len(_DVC_TEMP)):
        if parts[i:i + len(_DVC_TEMP)] == _DVC_TEMP:
            return Path(*parts[:i])
    for candidate in (path, *path.parents):
        if (candidate / "dvc.yaml").is_file():
            return candidate
    return path


def tracking_uri(root: Path | None = None) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root or repo_root()) / STORE_FILE}"


def use_store(root: Path | None = None) -> str:
    """Point MLflow at the project store; return its URI."""
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)  # note: this also exports MLFLOW_TRACKING_URI to the environment
    return uri


def setup(experiment: str, root: Path | None = None) -> str:
    """Point MLflow at the project store and make sure `experiment` exists; return its id.

    A new experiment in the default local store keeps its artifacts beside mlflow.db (not in
    ./mlruns of whatever directory a job happens to run in); a tracking server chooses its own.
    """
    root = root or repo_root()
    default_store = "MLFLOW_TRACKING_URI" not in os.environ
    uri = use_store(root)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise UserError(f"MLflow experiment {experiment!r} is deleted in {uri}; restore it "
                            f"(mlflow experiments restore) or choose another tracking.experiment")
        return found.experiment_id
    location = (root / ARTIFACT_DIR / experiment).as_uri() if default_store else None
    try:
        return client.create_experiment(experiment, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # Another process created it between our lookup and create.
        return client.get_experiment_by_name(experiment).experiment_id


def git_tags(root: Path) -> dict[str, str]:
    """The commit the code came from, and whether the working tree differed from it."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    # One git call for both (each costs a few ms of every run): the header line
    # "# branch.oid <commit>", then one line per changed tracked file.
    status = git("status", "--porcelain=v2", "--branch", "--untracked-files=no")
    if status is None:
        return {}
    lines = status.splitlines()
    commit = next((line.split()[2] for line in lines if line.startswith("# branch.oid ")), "(initial)")
    if commit == "(initial)":
        return {}
    dirty = any(not line.startswith("#") for line in lines)
    return {"git_commit": commit, "git_dirty": str(dirty).lower()}


def run_tags(root: Path, data_checksums: dict[str, str], entry_point: str) -> dict[str, str]:
    tags = {"entry_point": entry_point, **git_tags(root)}
    tags.update({f"data.sha256.{name}": digest for name, digest in data_checksums.items()})
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


class EpochMetrics:
    """Per-epoch metrics (and the run's totals, at step 0) for the active run, sent in batches
    at most every `interval_s` seconds.

    One write to the SQLite store costs about 7 ms, several percent of a default epoch; one batch per
    interval keeps logging far below that while the MLflow UI still follows a long run.
    Call flush() when training ends, also when it fails, so no epoch is lost.
    """

    def __init__(self, interval_s: float = 10.0) -> None:
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
