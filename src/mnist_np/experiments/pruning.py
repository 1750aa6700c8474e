"""Optuna pruning across processes and machines: a job reports its validation accuracy after every
epoch to its trial, through the study's storage, and stops when the study's pruner says so.

The Optuna sweeper tells each job which trial it is through the job's Hydra environment
(`hydra.job.env_set`, applied wherever the launcher runs the job: in the sweep's process, a joblib
worker, a Ray task); the study's storage reaches the job as $MNIST_NP_OPTUNA_STORAGE, which the
sweeper exports (and conf/hydra/launcher/mnist_ray.yaml passes to Ray tasks). The job loads the study with
the same pruner, so the pruner compares its reports with those of every other trial of the study,
whichever process or machine ran them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from . import STORAGE_ENV

TRIAL_ENV = "MNIST_NP_OPTUNA_TRIAL"
PRUNED_TAG = "pruned"  # on a pruned job's MLflow run: at which epoch, and its last reported accuracy
PRUNED_EPOCH_TAG = "pruned_at_epoch"
PRUNERS = {  # hydra.sweeper.pruner -> Optuna's class; hydra.sweeper.pruner_args are its arguments
    "none": "NopPruner",
    "median": "MedianPruner",
    "asha": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
}


def make_pruner(name: str, args: Mapping[str, Any] | None = None):
    """Optuna's pruner for hydra.sweeper.pruner=`name` with `args`; a ConfigError naming the choices
    or the argument Optuna refused."""
    import optuna

    if name not in PRUNERS:
        raise ConfigError(f"hydra.sweeper.pruner={name} is not one of {', '.join(PRUNERS)}")
    cls = getattr(optuna.pruners, PRUNERS[name])
    try:
        return cls(**dict(args or {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"hydra.sweeper.pruner_args {dict(args or {})} do not suit optuna.pruners.{cls.__name__}: {exc}"
        ) from exc


def job_override(study_name: str, trial_id: int, pruner: str, pruner_args: Mapping[str, Any]) -> str:
    """The Hydra override that tells a job which trial it is and how the study prunes."""
    payload = json.dumps({"study": study_name, "trial_id": trial_id, "pruner": pruner, "args": dict(pruner_args)})
    return f"+hydra.job.env_set.{TRIAL_ENV}='{payload}'"


class Pruned(Exception):
    """The study's pruner stopped this job's trial after an epoch (raised in the job, and returned
    by it to the sweeper: its arguments are all it holds, so it pickles)."""

    def __init__(self, epoch: int, value: float) -> None:
        super().__init__(epoch, value)
        self.epoch, self.value = epoch, value

    def __str__(self) -> str:
        return f"epoch {self.epoch}: validation accuracy {self.value:.4f} below what the pruner keeps at that epoch"


class TrialReporter:
    """In a job: report each epoch's validation accuracy to the trial; raise Pruned when the study's
    pruner says the trial should stop."""

    def __init__(self, payload: Mapping[str, Any], storage_url: str) -> None:
        import optuna

        pruner = make_pruner(payload["pruner"], payload["args"])
        study = optuna.load_study(study_name=payload["study"], storage=storage_url, pruner=pruner)
        self.trial = optuna.trial.Trial(study, payload["trial_id"])

    def __call__(self, epoch: int, val_accuracy: float) -> None:
        self.trial.report(val_accuracy, epoch)
        if self.trial.should_prune():
            raise Pruned(epoch, val_accuracy)


def reporter_from_env() -> TrialReporter | None:
    """The job's reporter when an Optuna sweep that prunes launched it, else None."""
    payload = os.environ.get(TRIAL_ENV)
    if not payload or not os.environ.get(STORAGE_ENV):
        return None
    payload = json.loads(payload)
    return None if payload["pruner"] == "none" else TrialReporter(payload, os.environ[STORAGE_ENV])
