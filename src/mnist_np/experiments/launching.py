"""A sweep's jobs launched as slots free up, their results taken as they finish.

Hydra's launcher interface takes a batch of jobs and returns when the last of them ends, so a
sweep that launches in rounds waits for each round's slowest job. `slots(launcher, capacity)`
keeps `capacity` jobs running instead: the sweeper submits a job whenever one ends, and takes each
result as its job ends. Nothing here schedules: joblib's process executor (loky, behind
`joblib.Parallel`) and Ray's tasks with `ray.wait` do, and a launcher with neither (Hydra's basic
one) runs one job at a time, as before.

Each job is composed where it runs, as Hydra's joblib launcher does: the driver sends a job its
number and overrides; the Hydra state all jobs share (the config loader, the sweep's config, the
task function) is sent once (to Ray: one object in its object store, so 10,000 tasks do not carry
10,000 copies of it; benchmarks/ray_submission.py).

What the sweep's process learns as it starts (its MLflow parent run, the store, the project) reaches
every job through the job's own Hydra environment (`hand_to_jobs`), not through the environment a
worker process inherits: so joblib's workers can start, and import what a job runs, while the sweep
is still opening its parent run (`start_workers`).
"""

from __future__ import annotations

import importlib
import itertools
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from concurrent import futures
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from .. import processes

log = logging.getLogger(__name__)
STOP_GRACE_S = 15.0  # after Ctrl-C or SIGTERM, how long running jobs get to end their runs before they are killed
JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


class JobLost(RuntimeError):
    """A job that returned nothing: its worker or node died, or it ran past its time."""


def shared_state(launcher) -> tuple:
    """What every job of `launcher`'s sweep needs besides its overrides (sent once)."""
    return launcher.hydra_context, launcher.config, launcher.task_function, Singleton.get_state()


def execute_job(idx: int, overrides: Sequence[str], shared: tuple) -> JobReturn:
    """Job `idx` of the sweep, where it runs: its configuration composed from its overrides, then
    Hydra's own run_job (its output directory, logging, callbacks, return value or exception)."""
    hydra_context, config, task_function, singleton_state = shared
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    return run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def hand_to_jobs(config: DictConfig, env: Mapping[str, str]) -> None:
    """Set `env` in every job of the sweep whose config is `config`, wherever the job runs (in this
    process, a joblib worker started earlier, a Ray task on another node): as `hydra.job.env_set`
    entries among the sweep's own Hydra overrides, from which Hydra composes every job
    (ConfigLoader.load_sweep_config), and which Hydra applies around the job's task function."""
    overrides = config.hydra.overrides.hydra
    with read_write(overrides):
        overrides.extend([f"++hydra.job.env_set.{name}={override_string(value)}" for name, value in env.items()])


def override_string(value: str) -> str:
    """`value` as a quoted string of Hydra's override grammar: a backslash escapes only a quote or the
    backslashes before one (or before the closing quote), and `${` would start an interpolation."""
    escaped = re.sub(r"(\\*)('|$)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), value)
    return "'" + escaped.replace("${", "\\${") + "'"


def start_workers(launcher_cfg: DictConfig, module: str) -> None:
    """For a sweep on Hydra's joblib launcher: start its worker processes now, each importing `module`
    (what a job runs: ~3 s of CPU each), on the cores the sweep's process leaves idle while it
    imports MLflow and opens the store and its parent run (benchmarks/sweep_parallel.py). Its jobs
    then run in these workers (JoblibSlots: the same loky executor). `stop_workers` undoes it when
    the sweep cannot start."""
    if launcher_cfg.get("_target_") != JOBLIB_LAUNCHER:
        return
    workers = joblib_width(launcher_cfg.get("n_jobs"))
    executor = joblib_executor(workers)
    for _ in range(workers):
        executor.submit(_load, module)
    _STARTED.append(executor)
    log.info("starting %d joblib workers: they load what a job runs while the sweep opens its run", workers)


def _load(module: str) -> None:
    importlib.import_module(module)


_STARTED: list = []  # the executors start_workers started (stop_workers kills their workers)


def stop_workers() -> None:
    """Kill the workers start_workers started (a sweep that stops before its first job need not wait
    for their imports)."""
    while _STARTED:
        _STARTED.pop().shutdown(wait=False, kill_workers=True)


def joblib_executor(workers: int):
    """joblib's process executor (loky) with `workers` processes: the same executor, and processes,
    for every call with the same number."""
    from joblib.externals.loky import get_reusable_executor

    return get_reusable_executor(max_workers=workers, reuse=True)


def lost(idx: int, overrides: Sequence[str], reason: str) -> JobReturn:
    """The result of job `idx` that returned none (its worker or node died, or it ran too long),
    its MLflow run ended FAILED with the reason at once (or one made for it: job_runs.py)."""
    from . import job_runs  # here, not at the top: Hydra imports the plugins (this module) for --help, too

    log.error("error: job %d failed: %s", idx, reason)
    job_runs.record_failure(idx, overrides, reason)
    return JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=JobLost(reason))


class InOrder:
    """Any Hydra launcher, one job at a time: each job runs when submitted (the basic launcher
    runs it in this process)."""

    def __init__(self, launcher) -> None:
        self.launcher, self.capacity, self.done = launcher, 1, []

    def __enter__(self) -> InOrder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __len__(self) -> int:
        return len(self.done)

    def submit(self, idx: int, overrides: Sequence[str]) -> None:
        self.done.append((idx, self.launcher.launch([list(overrides)], initial_job_idx=idx)[0]))

    def finished(self) -> list[tuple[int, JobReturn]]:
        done, self.done = self.done, []
        return done


class JoblibSlots:
    """`capacity` worker processes of joblib's own executor (loky), a job submitted to each as it
    frees. Stopped (Ctrl-C, SIGTERM), the workers get SIGTERM, so each running job ends its MLflow
    run KILLED, and the workers are killed once those jobs have returned (at most STOP_GRACE_S later)."""

    def __init__(self, launcher, capacity: int) -> None:
        self.capacity, self.shared = capacity, shared_state(launcher)
        self.executor = joblib_executor(capacity)
        self.pending: dict[futures.Future, tuple[int, list[str]]] = {}

    def __enter__(self) -> JoblibSlots:
        return self

    def __len__(self) -> int:
        return len(self.pending)

    def submit(self, idx: int, overrides: Sequence[str]) -> None:
        future = self.executor.submit(execute_job, idx, list(overrides), self.shared)
        self.pending[future] = (idx, list(overrides))

    def finished(self) -> list[tuple[int, JobReturn]]:
        done, _ = futures.wait(list(self.pending), return_when=futures.FIRST_COMPLETED)
        out = []
        for future in done:
            idx, overrides = self.pending.pop(future)
            try:
                out.append((idx, future.result()))
            except Exception as exc:  # the worker died (killed, out of memory): loky says which
                out.append((idx, lost(idx, overrides, f"its worker process died: {exc}")))
        return out

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is None or not self.pending:
            return
        for future in self.pending:
            future.cancel()
        # loky's workers are named LokyProcess-N (its resource tracker, also a child, ignores SIGTERM)
        workers = [p for p in processes.psutil.Process().children() if "LokyProcess" in " ".join(_cmdline(p))]
        for worker in workers:
            worker.terminate()
        # Each running job ends its run and returns; its worker would then wait for more work (loky's
        # idle timeout, 10 s), so the jobs are waited for, not the processes.
        futures.wait(list(self.pending), timeout=STOP_GRACE_S)
        self.executor.shutdown(wait=False, kill_workers=True)


def _cmdline(proc) -> list[str]:
    try:
        return proc.cmdline()
    except processes.psutil.Error:
        return []


class RaySlots:
    """Ray tasks: `capacity` at a time (None: as many as the cluster's CPUs hold), each result
    taken as it finishes (ray.wait). The shared Hydra state goes into Ray's object store once; a
    task carries its number and overrides. A task still running `timeout_s` after it was
    submitted is cancelled and counted failed. Stopped (Ctrl-C, SIGTERM), the running tasks are
    cancelled: each gets KeyboardInterrupt and ends its MLflow run KILLED."""

    def __init__(self, launcher, capacity: int | None, timeout_s: float | None = None) -> None:
        import ray

        if not ray.is_initialized():
            init = OmegaConf.to_container(launcher.ray_cfg.init, resolve=True) or {}
            ray.init(**{k: v for k, v in init.items() if v is not None})
        remote = OmegaConf.to_container(launcher.ray_cfg.remote, resolve=True) or {}
        self.ray, self.timeout_s = ray, timeout_s
        per_job = float(remote.get("num_cpus", 1) or 1)
        self.capacity = capacity or max(1, int(ray.cluster_resources().get("CPU", 1) // per_job))
        self.task = ray.remote(**remote)(execute_job) if remote else ray.remote(execute_job)
        self.shared = ray.put(shared_state(launcher))
        self.pending: dict[Any, tuple[int, list[str], float]] = {}

    def __enter__(self) -> RaySlots:
        return self

    def __len__(self) -> int:
        return len(self.pending)

    def submit(self, idx: int, overrides: Sequence[str]) -> None:
        ref = self.task.remote(idx, list(overrides), self.shared)
        self.pending[ref] = (idx, list(overrides), time.monotonic())

    def _overdue(self) -> float | None:
        """Seconds until the next task's deadline (None: no deadline)."""
        if self.timeout_s is None:
            return None
        first = min(submitted for _, _, submitted in self.pending.values())
        return max(0.0, first + self.timeout_s - time.monotonic())

    def finished(self) -> list[tuple[int, JobReturn]]:
        ray = self.ray
        ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=self._overdue())
        if ready:  # and every other result already in: one pass over 10,000 pending tasks, not one each
            ready, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)
        out = []
        for ref in ready:
            idx, overrides, _ = self.pending.pop(ref)
            try:
                out.append((idx, ray.get(ref)))
            except (ray.exceptions.RayTaskError, ray.exceptions.TaskCancelledError) as exc:
                out.append((idx, lost(idx, overrides, f"it stopped: {exc}")))
            except ray.exceptions.RayError as exc:  # worker or node died, after Ray's own retries
                out.append((idx, lost(idx, overrides, f"its Ray worker or node was lost: {type(exc).__name__}")))
        now = time.monotonic()
        for ref, (idx, overrides, submitted) in list(self.pending.items()):
            if self.timeout_s is not None and now - submitted > self.timeout_s:
                ray.cancel(ref, force=False)  # KeyboardInterrupt in the job: it ends its run KILLED
                del self.pending[ref]
                reason = f"it ran past hydra.launcher.job_timeout_s={self.timeout_s:g} and was stopped"
                out.append((idx, lost(idx, overrides, reason)))
        return out

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is None:
            return
        for ref in self.pending:
            self.ray.cancel(ref, force=False)
        self.ray.wait(list(self.pending), num_returns=len(self.pending), timeout=STOP_GRACE_S)


class SkipFinished:
    """`launcher`, less the jobs a resumed sweep finished before (`finished`: job number -> its
    kept validation accuracy, returned as its result); the others keep their numbers."""

    def __init__(self, launcher, finished: dict[int, float]) -> None:
        self.launcher, self.finished = launcher, finished

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        results: dict[int, JobReturn] = {}
        to_run = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            if idx in self.finished:
                log.info("job %d finished in the sweep this one resumes: not run again", idx)
                value = self.finished[idx]
                results[idx] = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=value)
            else:
                to_run.append((idx, overrides))
        # Each stretch of consecutive jobs to run in one launch, from its first job's number.
        for _, stretch in itertools.groupby(enumerate(to_run), key=lambda pair: pair[1][0] - pair[0]):
            jobs = [job for _, job in stretch]
            launched = self.launcher.launch([overrides for _, overrides in jobs], initial_job_idx=jobs[0][0])
            results.update({idx: ret for (idx, _), ret in zip(jobs, launched, strict=True)})
        return [results[idx] for idx in sorted(results)]


def slots(launcher, capacity: int | None):
    """Slots for `launcher`'s jobs: `capacity` at a time (None: the launcher's own width)."""
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

    if hasattr(launcher, "slots"):  # the project's Ray launcher (hydra_plugins/mnist_np_plugins)
        return launcher.slots(capacity)
    if isinstance(launcher, JoblibLauncher):
        return JoblibSlots(launcher, capacity or joblib_width(launcher.joblib.get("n_jobs")))
    return InOrder(launcher)


def launch_as_finished(
    launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int, capacity: int | None = None
) -> list[JobReturn]:
    """Hydra's `launch` on slots: every job submitted (`capacity` at a time; None: the launcher's
    width), each result logged as its job ends, the results returned in the jobs' order."""
    results: dict[int, JobReturn] = {}
    with slots(launcher, capacity) as running:
        queue = list(enumerate(job_overrides, start=initial_job_idx))
        while queue or len(running):
            while queue and len(running) < running.capacity:
                running.submit(*queue.pop(0))
            for idx, ret in running.finished():
                results[idx] = ret
                log.info("job %d ended %s (%d of %d)", idx, ret.status.name, len(results), len(job_overrides))
    return [results[i] for i in sorted(results)]


class AsFinished:
    """Hydra's joblib launcher with its jobs run on JoblibSlots (launch_as_finished), in the workers
    `start_workers` started, each job submitted as a worker frees."""

    def __init__(self, launcher) -> None:
        self.launcher = launcher

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        return launch_as_finished(self.launcher, job_overrides, initial_job_idx)


def joblib_width(n_jobs: int | None) -> int:
    """Joblib's n_jobs as a number of workers (-1: every core, -2: all but one, ...)."""
    count = len(os.sched_getaffinity(0))
    if not n_jobs:
        return 1
    return n_jobs if n_jobs > 0 else max(1, count + 1 + n_jobs)
