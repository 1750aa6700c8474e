"""Hydra plugins of this project. Hydra instantiates sweepers and launchers only from the
`hydra_plugins` namespace package, so they are named here; their code lives in mnist_np.experiments
(optuna_sweeper.py, launching.py)."""

from collections.abc import Sequence

# Private: Hydra exposes its basic sweeper nowhere else. tests/test_private_apis.py fails by name the
# day an upgrade moves it.
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobReturn

from mnist_np.experiments import launching
from mnist_np.experiments.optuna_sweeper import OptunaSweeper as _OptunaSweeper


class OptunaSweeper(_OptunaSweeper):
    """Bayesian search over Optuna's ask-and-tell interface (conf/hydra/sweeper/mnist_optuna.yaml)."""


class GridSweeper(BasicSweeper):
    """Hydra's basic sweeper (every combination of the overrides; conf/hydra/sweeper/mnist_grid.yaml,
    the default) without its second composition of every job before the first starts: the sweep's
    callback (mnist_np.experiments.sweep_callback.SweepCallback) has already composed every combination and
    checked it against the schema and the prepared data. Hydra's pass took ~50 ms a job."""

    def __init__(self, max_batch_size: int | None, params: dict | None = None, resume: str | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.resume = resume

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        return None

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        """Hydra's grid (less the jobs that finished in the sweep this one resumes), then a FAILED
        run for every failed job that could not open one (job_runs.py). On the joblib launcher, the
        jobs run in the workers the sweep started as it began (launching.start_workers)."""
        from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

        from mnist_np.experiments import job_runs  # MLflow: imported when a sweep runs, not for --help

        if isinstance(self.launcher, JoblibLauncher):
            self.launcher = launching.AsFinished(self.launcher)
        if self.resume:  # the sweep's callback has taken the earlier sweep's job runs over
            self.launcher = launching.SkipFinished(self.launcher, job_runs.finished_jobs())
        returns = super().sweep(arguments)
        job_runs.record_failures([ret for batch in returns for ret in batch])
        return returns


try:  # Ray and its launcher are the cluster extra's (pip install -e .[cluster])
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as _RayLauncher
except ImportError:
    pass
else:

    class RayLauncher(_RayLauncher):
        """Hydra's Ray launcher (conf/hydra/launcher/mnist_ray.yaml) with its jobs composed where they run
        and the shared Hydra state sent once, results taken as jobs finish, an optional time limit
        per job, and slots for the Optuna sweeper (launching.py)."""

        def __init__(self, ray, job_timeout_s: float | None = None) -> None:
            super().__init__(ray)
            self.job_timeout_s = job_timeout_s

        def slots(self, capacity: int | None) -> launching.RaySlots:
            return launching.RaySlots(self, capacity, self.job_timeout_s)

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            # all submitted at once: Ray queues what waits for a CPU
            return launching.launch_as_finished(self, job_overrides, initial_job_idx, len(job_overrides))
