"""Sharing the machine's cores between training jobs that run at the same time.

A BLAS that takes every core in each of two jobs makes both spin against each other (measured: an
epoch 10-20x slower than alone), and even with one BLAS thread each, two jobs whose threads (BLAS and
batch gathering) wander over the same cores run 1.6x slower than alone (docs/scaling.md). So each
training process registers itself in a per-user folder of the temporary directory while it trains,
and before each epoch takes its share: the cores it may use divided by the jobs training now, as a
set of its own (the k-th job by pid gets the k-th slice), to which it pins all its threads. This
covers every way jobs run side by side on one machine (joblib and Ray workers, `dvc queue start -j N`,
two terminals) without telling any launcher anything. A job that ends, or is killed, stops counting
(its pid is gone). `MNIST_NP_CORES=N` fixes the share at N threads instead and pins nothing (a
cluster scheduler's allocation is already the job's own).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .. import processes
from ..errors import ConfigError

CORES_ENV = "MNIST_NP_CORES"


def registry() -> Path:
    return Path(tempfile.gettempdir()) / f"mnist-np-training-{os.getuid()}"


def training_jobs() -> list[int]:
    """Pids of this user's registered training processes that are still alive, in order."""
    folder = registry()
    live = []
    for entry in folder.glob("*") if folder.is_dir() else ():
        if entry.name.isdigit() and processes.alive(int(entry.name)):
            live.append(int(entry.name))
        else:
            entry.unlink(missing_ok=True)  # left by a killed job
    return sorted(live)


def fixed_share() -> int | None:
    """$MNIST_NP_CORES as a number of cores, or None when it is not set."""
    value = os.environ.get(CORES_ENV)
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{CORES_ENV}={value!r} is invalid: set a whole number of cores >= 1, or unset it")
    return int(value)


def slice_for(allowed: list[int], jobs: list[int], pid: int) -> list[int]:
    """The cores of job `pid` among `jobs` (all sharing `allowed`): an equal, disjoint slice each
    while there are cores enough, else one core, taken round-robin."""
    per = max(1, len(allowed) // max(len(jobs), 1))
    slot = jobs.index(pid) if pid in jobs else 0
    start = (slot * per) % len(allowed)
    return [allowed[(start + i) % len(allowed)] for i in range(per)]


def _pin(cores: set[int]) -> None:
    """Every thread of this process (the BLAS's already exist) onto `cores`."""
    for thread in processes.psutil.Process().threads():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(thread.id, cores)


class Share(contextlib.AbstractContextManager):
    """This process counted among the training jobs for as long as the block runs; `take()` before
    each epoch pins it to its current share and returns how many cores that is. On leaving, every
    thread may run on all the cores it could before. Use `share()`, which a whole sweep job enters
    (so its data loading, evaluation and logging stay on its slice too) and training reuses."""

    def __init__(self) -> None:
        self.allowed = sorted(os.sched_getaffinity(0))  # what Ray, taskset or a cgroup left us
        self.entry = registry() / str(os.getpid())

    def __enter__(self) -> Share:
        self.entry.parent.mkdir(parents=True, exist_ok=True)
        self.entry.touch()
        return self

    def take(self) -> int:
        fixed = fixed_share()
        if fixed is not None:
            return fixed
        cores = slice_for(self.allowed, training_jobs(), os.getpid())
        _pin(set(cores))
        return len(cores)

    def __exit__(self, *exc: object) -> None:
        self.entry.unlink(missing_ok=True)
        _pin(set(self.allowed))


_ACTIVE: list[Share] = []


@contextlib.contextmanager
def share() -> Iterator[Share]:
    """The process's share for the block: the one already active (a sweep job's, around its
    training), else a new one, registered and pinned at once."""
    if _ACTIVE:
        yield _ACTIVE[0]
        return
    with Share() as current:
        _ACTIVE.append(current)
        try:
            current.take()
            yield current
        finally:
            _ACTIVE.remove(current)
