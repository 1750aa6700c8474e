"""Bayesian search: a Hydra sweeper over Optuna's ask-and-tell interface.

Selected with `hydra/sweeper=mnist_optuna` (conf/hydra/sweeper/mnist_optuna.yaml). It keeps `n_jobs`
trials running through whichever Hydra launcher is configured (basic, joblib, Ray: launching.py),
asking the study for the next trial as soon as a job ends, and tells the study what each job
returned (the kept weights' validation accuracy; a failed job is a failed trial, a job its pruner
stopped a pruned one: pruning.py), until the study has `n_trials` finished trials; a stopped sweep
started again with its study_name goes on from there. The study persists: by default in `optuna.db`
beside the SQLite MLflow store, or in the database `storage` names, so `optuna-dashboard` can open it
and several sweep processes given the same `study_name` share one study. When the search ends, the
sweep's parent run gets Optuna's figures.

(Hydra's own Optuna plugin pins optuna<3, whose database storage no longer works with the
SQLAlchemy MLflow needs; this is the part of it the project uses, on today's Optuna.)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import threading
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

from ..errors import ConfigError
from . import STORAGE_ENV, launching, pruning

log = logging.getLogger(__name__)
STUDY_FILE = "optuna.db"
HEARTBEAT_S, GRACE_S = 30, 120


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
            with warnings.catch_warnings():  # the heartbeat arguments are marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    # While a sweep runs its trials it beats for them (TrialHeartbeats); a trial whose
                    # sweep died outright (kill -9, a lost node) is failed once GRACE_S pass without a
                    # beat, and its parameters are queued again (fail_stale_trials, every round).
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(),
                )
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
        n_jobs: int | None,
        seed: int | None,
        params: DictConfig | None,
        pruner: str = "none",
        pruner_args: DictConfig | None = None,
    ) -> None:
        self.direction = direction
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.seed = seed
        self.params = OmegaConf.to_container(params) if params else {}
        self.pruner = pruner
        self.pruner_args = OmegaConf.to_container(pruner_args) if pruner_args else {}

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
        pruner = pruning.make_pruner(self.pruner, self.pruner_args)
        if storage is None and self.pruner != "none":
            raise ConfigError(
                "pruning needs a study storage every job can reach; set hydra.sweeper.storage or "
                f"${STORAGE_ENV} to a database URL"
            )
        if storage:  # for the jobs' pruning reports (pruning.py)
            launching.hand_to_jobs(self.config, {STORAGE_ENV: storage})
        name = self.study_name or f"mnist-{datetime.now():%Y%m%d-%H%M%S-%f}"
        # Processes sharing a named study must each draw differently, or they would all propose the
        # same trials: their samplers get a random seed (the seed plus the pid repeated in containers,
        # where every process is pid 1), recorded on the parent, since their interleaving makes such
        # a study unrepeatable anyway. A sweep's own study repeats exactly with the same seed.
        seed = secrets.randbelow(2**31) if self.study_name else self.seed
        opened = open_storage(storage)
        study = optuna.create_study(
            study_name=name,
            storage=opened,
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=pruner,
            direction=self.direction,
            load_if_exists=True,  # several sweep processes with one study_name share its trials
        )
        _record_study_on_parent(name, storage, seed)
        done = len(finished_trials(study))
        log.info(
            "Optuna study %r in %s: %d trials (%d finished before), pruner %s",
            name,
            redacted(storage),
            self.n_trials,
            done,
            self.pruner,
        )

        running: dict[int, Any] = {}  # job number -> its trial
        job_idx = 0
        try:
            with launching.slots(self.launcher, self.n_jobs) as free, TrialHeartbeats(opened) as beats:
                log.info("trials run %d at a time, each started as a slot frees", free.capacity)
                while True:
                    if storage:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                            optuna.storages.fail_stale_trials(study)  # trials of sweeps that died: failed, queued again
                    # The study's total, not this process's: processes sharing a study reach it together
                    # (each may start up to a slot's worth past it), and a stopped sweep started again finishes it.
                    remaining = self.n_trials - len(finished_trials(study)) - len(running)
                    while remaining > 0 and len(free) < free.capacity:
                        with warnings.catch_warnings():  # Optuna expects heartbeats from study.optimize only
                            warnings.filterwarnings("ignore", message="Heartbeat of storage")
                            trial = study.ask(space)
                        running[job_idx] = trial
                        beats.add(trial)
                        free.submit(job_idx, self._overrides(trial, fixed, name, storage))
                        job_idx, remaining = job_idx + 1, remaining - 1
                    if not running:
                        break
                    for idx, ret in free.finished():
                        trial = running.pop(idx)
                        beats.remove(trial)
                        self._tell(study, trial, idx, ret)
        except BaseException:  # stopped (Ctrl-C, SIGTERM), or a job raised: the trials in flight are queued again
            for trial in running.values():
                fail_for_retry(study, trial.number)
            raise
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            best = {"study_name": name, "best_params": study.best_params, "best_value": study.best_value}
            OmegaConf.save(OmegaConf.create(best), Path(self.config.hydra.sweep.dir) / "optimization_results.yaml")
        _log_figures(study)

    def _overrides(self, trial, fixed: dict[str, str], study_name: str, storage: str | None) -> list[str]:
        """A trial's job: its parameters, the fixed overrides, and (with a storage) which trial it is."""
        values = {**trial.params, **fixed}
        tell_job = [pruning.job_override(study_name, trial._trial_id, self.pruner, self.pruner_args)] if storage else []
        return [*(f"{k}={v}" for k, v in values.items()), *tell_job]

    @staticmethod
    def _tell(study, trial, idx: int, ret) -> None:
        """Tell the study how `trial`'s job (number `idx`, result `ret`) ended."""
        import optuna

        try:
            value = ret.return_value  # re-raises a job's unexpected exception
        except launching.JobLost:  # its worker or node died (launching.lost recorded it): the sweep goes on
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        if isinstance(value, pruning.Pruned):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif math.isfinite(value):
            study.tell(trial, float(value))
        else:  # the job failed cleanly: its run is FAILED with the reason (or, without a run, one made for it)
            from . import job_runs  # MLflow: not at the top, which Hydra imports for --help

            job_runs.record_failure(idx, ret.overrides, job_runs.failed_before_run(ret))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)


def finished_trials(study) -> list:
    """The study's trials that ran to an end: complete or pruned (failed ones do not count)."""
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=done)


class TrialHeartbeats:
    """Within the block, record a heartbeat in the study's storage every HEARTBEAT_S seconds (from a
    daemon thread) for each trial added and not yet removed, as Optuna's own optimize loop does for
    its trials."""

    def __init__(self, storage) -> None:
        self.storage, self.ids = storage, set()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="optuna-heartbeats", daemon=True)

    def add(self, trial) -> None:
        self.ids.add(trial._trial_id)
        if self.thread.is_alive():
            with contextlib.suppress(Exception):  # a beat missed now is sent at the next one
                self.storage.record_heartbeat(trial._trial_id)

    def remove(self, trial) -> None:
        self.ids.discard(trial._trial_id)

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            for trial_id in list(self.ids):
                with contextlib.suppress(Exception):
                    self.storage.record_heartbeat(trial_id)

    def __enter__(self) -> TrialHeartbeats:
        if self.storage is not None and self.storage.get_heartbeat_interval() is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join()


def fail_for_retry(study, number: int) -> None:
    """Mark an interrupted trial FAIL and queue its parameters again (Optuna's own retry callback
    for stale trials), so that the study, started again, tries that configuration again."""
    import optuna

    trial = study.get_trials(deepcopy=False)[number]
    if trial.state == optuna.trial.TrialState.RUNNING:
        study.tell(number, state=optuna.trial.TrialState.FAIL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback()
        retry(study, study.get_trials(deepcopy=False)[number])


def _record_study_on_parent(name: str, storage: str | None, seed: int | None) -> None:
    from mlflow.tracking import MlflowClient

    from . import PARENT_ENV

    parent = os.environ.get(PARENT_ENV)
    if parent:
        client = MlflowClient()
        client.set_tag(parent, "optuna.study_name", name)
        client.set_tag(parent, "optuna.storage", redacted(storage))
        client.set_tag(parent, "optuna.sampler_seed", str(seed))  # the seed this process's sampler drew with


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
            client.set_tag(parent, f"optuna.figure.{name}", f"not drawn: {exc}")
            continue
        figure = axes.flatten()[0].figure if hasattr(axes, "flatten") else axes.figure
        # Optuna lays its figures out for a notebook: saved as they are, long labels were clipped.
        client.log_figure(parent, figure, f"optuna/{name}.png", save_kwargs={"bbox_inches": "tight"})
        plt.close(figure)
