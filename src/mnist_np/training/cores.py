"""Sharing the machine's cores between training jobs that run at the same time.

A BLAS that takes every core in each of two jobs makes both spin against each other (measured: an
epoch 10-20x slower than alone). So each training process registers itself in a per-user folder
of the temporary directory while it trains, and before each epoch takes its share of the cores it
may use: those cores divided by the number of jobs training now. This covers every way jobs run side
by side on one machine (joblib and Ray workers, `dvc queue start -j N`, two terminals) without
telling any launcher anything. A job that ends, or is killed, stops counting (its pid is gone).
`MNIST_NP_CORES` fixes the share instead (e.g. a cluster scheduler's allocation).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError

CORES_ENV = "MNIST_NP_CORES"


def registry() -> Path:
    return Path(tempfile.gettempdir()) / f"mnist-np-training-{os.getuid()}"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which Ray and taskset narrow)."""
    return len(os.sched_getaffinity(0))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def training_jobs() -> int:
    """Training processes of this user registered and still alive (at least this one)."""
    folder = registry()
    live = 0
    for entry in folder.glob("*") if folder.is_dir() else ():
        if entry.name.isdigit() and _alive(int(entry.name)):
            live += 1
        else:
            entry.unlink(missing_ok=True)  # left by a killed job
    return max(live, 1)


def share() -> int:
    """This job's cores: $MNIST_NP_CORES, else usable cores / training jobs now (at least 1)."""
    value = os.environ.get(CORES_ENV)
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"{CORES_ENV}={value!r} is invalid: set a whole number of cores >= 1, or unset it")
        return int(value)
    return max(1, usable_cores() // training_jobs())


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """Count this process among the training jobs for as long as the block runs."""
    folder = registry()
    folder.mkdir(parents=True, exist_ok=True)
    entry = folder / str(os.getpid())
    entry.touch()
    try:
        yield
    finally:
        entry.unlink(missing_ok=True)
