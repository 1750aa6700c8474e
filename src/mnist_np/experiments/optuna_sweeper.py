"""Bayesian search: a Hydra sweeper over Optuna's ask-and-tell interface.

Selected with `hydra/sweeper=mnist_optuna` (conf/hydra/sweeper/mnist_optuna.yaml). Each round asks
the study for `n_jobs` trials, launches them through whichever Hydra launcher is configured (basic,
joblib, ...) and tells the study what the jobs returned (the kept weights' validation accuracy; a
failed job is a failed trial). The study persists: by default in `optuna.db` beside the SQLite MLflow
store, or in the database `storage` names, so `optuna-dashboard` can open it and several sweep
processes given the same `study_name` share one study. When the search ends, the sweep's parent
run gets Optuna's figures.

(Hydra's own Optuna plugin pins optuna<3, whose database storage no longer works with the
SQLAlchemy MLflow needs; this is the part of it the project uses, on today's Optuna.)
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
STORAGE_ENV = "MNIST_NP_OPTUNA_STORAGE"  # a database URL shared by a team's sweeps (make cluster-up sets it)
STUDY_FILE = "optuna.db"


def default_storage(tracking_uri: str) -> str | None:
    """$MNIST_NP_OPTUNA_STORAGE, else `optuna.db` beside a SQLite MLflow store; None (the study
    lives in memory) for a tracking server without a configured database."""
    if os.environ.get(STORAGE_ENV):
        return os.environ[STORAGE_ENV]
    if tracking_uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking_uri[len('sqlite:///') :]).with_name(STUDY_FILE)}"
    return None


def open_storage(url: str | None, attempts: int = 5):
    """Optuna's storage at `url` (None: in memory), creating its tables on first use.

    Sweeps started together on an empty database race to create the tables; the losers get a
    duplicate-table error from the database and succeed once they retry, finding the tables there."""
    import optuna
    import sqlalchemy.exc

    if url is None:
        return None
    for attempt in range(1, attempts + 1):
        try:
            return optuna.storages.RDBStorage(url)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts:
                raise
            log.info(
                "another process is creating Optuna's tables in %s; retrying (%d/%d)", redacted(url), attempt, attempts
            )
            time.sleep(0.2 * attempt)


def redacted(url: str | None) -> str:
    """A storage URL without its password, for logs and run params."""
    if not url:
        return "in memory"
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if at and ":" in credentials:
        return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"
    return url


def sweep_overrides(arguments: Sequence[str], space: Mapping[str, str]) -> list[Override]:
    """A sweep's task overrides (`arguments`, Hydra's own left out) and the search space's entries
    for the keys they do not set: a key swept on the command line replaces its search-space entry."""
    parser = OverridesParser.create()
    given = [o for o in parser.parse_overrides(list(arguments)) if not o.is_hydra_override()]
    keys = {o.key_or_group for o in given}
    return given + parser.parse_overrides([f"{key}={value}" for key, value in space.items() if key not in keys])


def distribution(override: Override) -> Any:
    """An Optuna distribution for a sweep override (choice, list, range, interval with an optional
    `log` tag); None for a plain value."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return None
    if override.is_interval_sweep():
        interval = override.value()
        log_scale = "log" in interval.tags
        if isinstance(interval.start, int) and isinstance(interval.end, int):
            return IntDistribution(interval.start, interval.end, log=log_scale)
        return FloatDistribution(float(interval.start), float(interval.end), log=log_scale)
    return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        direction: str,
        study_name: str | None,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        seed: int | None,
        params: DictConfig | None,
    ) -> None:
        self.direction = direction
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.seed = seed
        self.params = OmegaConf.to_container(params) if params else {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> None:
        import mlflow
        import optuna

        space: dict[str, Any] = {}
        fixed: dict[str, str] = {}
        for override in sweep_overrides(arguments, self.params):
            found = distribution(override)
            if found is None:
                fixed[override.get_key_element()] = override.get_value_element_as_str()
            else:
                space[override.get_key_element()] = found
        storage = self.storage or default_storage(mlflow.get_tracking_uri())
        name = self.study_name or f"mnist-{datetime.now():%Y%m%d-%H%M%S-%f}"
        # Processes sharing a named study must each draw differently, or they would all propose the
        # same trials: their samplers are seeded afresh (the seed plus the pid repeated in containers,
        # where every process is pid 1), since their interleaving makes such a study unrepeatable
        # anyway. A sweep's own study repeats exactly with the same seed.
        seed = None if self.study_name else self.seed
        study = optuna.create_study(
            study_name=name,
            storage=open_storage(storage),
            sampler=optuna.samplers.TPESampler(seed=seed),
            direction=self.direction,
            load_if_exists=True,  # several sweep processes with one study_name share its trials
        )
        _record_study_on_parent(name, storage)
        log.info("Optuna study %r in %s: %d trials, %d at a time", name, redacted(storage), self.n_trials, self.n_jobs)

        job_idx, remaining = 0, self.n_trials
        while remaining > 0:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, remaining))]
            overrides = [[f"{k}={v}" for k, v in {**trial.params, **fixed}.items()] for trial in trials]
            returns = self.launcher.launch(overrides, initial_job_idx=job_idx)
            job_idx += len(returns)
            remaining -= len(returns)
            for trial, ret in zip(trials, returns):
                try:
                    value = float(ret.return_value)  # re-raises a job's unexpected exception
                except BaseException:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    raise
                if math.isfinite(value):
                    study.tell(trial, value)
                else:  # the job failed cleanly (its run is FAILED with the reason)
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            best = {"study_name": name, "best_params": study.best_params, "best_value": study.best_value}
            OmegaConf.save(OmegaConf.create(best), Path(self.config.hydra.sweep.dir) / "optimization_results.yaml")
        _log_figures(study)


def _record_study_on_parent(name: str, storage: str | None) -> None:
    from mlflow.tracking import MlflowClient

    from . import PARENT_ENV

    parent = os.environ.get(PARENT_ENV)
    if parent:
        client = MlflowClient()
        client.set_tag(parent, "optuna.study_name", name)
        client.set_tag(parent, "optuna.storage", redacted(storage))


def _log_figures(study) -> None:
    """Optuna's optimisation history, parameter importances and parallel coordinates as PNG
    artifacts of the sweep's parent run (skipped with a warning where a figure needs more trials)."""
    import matplotlib.pyplot as plt
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.visualization import matplotlib as figures

    from . import PARENT_ENV

    parent = os.environ.get(PARENT_ENV)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not parent or not completed:
        return
    client = MlflowClient()
    makers = {
        "optimization_history": figures.plot_optimization_history,
        # PED-ANOVA needs no scikit-learn (fANOVA, Optuna's default, does).
        "param_importances": lambda s: figures.plot_param_importances(
            s, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
        ),
        "parallel_coordinate": figures.plot_parallel_coordinate,
    }
    for name, make in makers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = make(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            log.warning("Optuna figure %s skipped: %s", name, exc)
            continue
        figure = axes.flatten()[0].figure if hasattr(axes, "flatten") else axes.figure
        client.log_figure(parent, figure, f"optuna/{name}.png")
        plt.close(figure)
