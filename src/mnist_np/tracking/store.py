"""Where MLflow runs go: the store every entry point shares, and the experiment in it.

One store for every entry point: $MLFLOW_TRACKING_URI when set, else
sqlite:///<repository root>/mlflow.db with artifacts in <repository root>/mlartifacts.
DVC runs queued experiments in copies under <repo>/.dvc/tmp/exps/; the repository root is
resolved past that, so those runs land in the same store as everything else.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from .. import config
from ..errors import UserError

STORE_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
_DVC_TEMP = (".dvc", "tmp", "exps")


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The repository a run belongs to, even when DVC runs it in a temporary copy."""
    path = Path(start or os.environ.get("DVC_ROOT") or Path.cwd()).resolve()
    parts = path.parts
    for i in range(len(parts) - len(_DVC_TEMP)):
        if parts[i : i + len(_DVC_TEMP)] == _DVC_TEMP:
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
            raise UserError(
                f"MLflow experiment {experiment!r} is deleted in {uri}; restore it "
                f"(mlflow experiments restore) or choose another tracking.experiment"
            )
        return found.experiment_id
    location = (root / ARTIFACT_DIR / experiment).as_uri() if default_store else None
    try:
        return client.create_experiment(experiment, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # Another process created it between our lookup and create.
        return client.get_experiment_by_name(experiment).experiment_id


def project_experiment(root: Path | None = None) -> str:
    """The experiment the pipeline logs to: tracking.experiment in the repository's params.yaml."""
    params = (root or repo_root()) / "params.yaml"
    if not params.is_file():
        raise UserError(
            f"{params} not found, so the project's experiment is unknown; run from the repository "
            "or name the experiment (--experiment)"
        )
    return config.load_params(params).tracking.experiment
