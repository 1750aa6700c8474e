"""The Hydra callback of every sweep (`hydra.callbacks.mlflow_sweep` in conf/config.yaml): it starts
the sweep's joblib workers, opens the sweep's MLflow parent run before the first job and records the
best child on it after the last (sweep_parent.py).

Hydra imports this module, and makes the callback, before the sweep starts. It imports little beyond
what Hydra and the entry point have loaded (launching.py, ~40 ms), so the workers start at once and
spend their ~3 s of imports (MLflow, NumPy, what a job runs) beside this process's own import of
MLflow and its opening of the parent run, instead of after them (benchmarks/sweep_parallel.py).
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .. import cli
from ..errors import UserError
from . import launching

JOB_MODULE = "mnist_np.experiments.sweep_job"  # what a job runs: joblib's workers import it as they start


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.parent = None  # sweep_parent.SweepParent, once the sweep starts

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exceptions into warnings and starts the jobs anyway, without a
        # parent run; whatever goes wrong here must stop the sweep before any job starts.
        try:
            launching.start_workers(config.hydra.launcher, JOB_MODULE)
            from . import sweep_parent  # MLflow, pandas, matplotlib: while the workers import theirs

            self.parent = sweep_parent.SweepParent()
            self.parent.open(config)
        except UserError as exc:
            launching.stop_workers()
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(cli.EXIT_USER_ERROR) from exc
        except Exception as exc:
            launching.stop_workers()
            traceback.print_exc()
            raise SystemExit(1) from exc

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent is None:
            return
        try:
            self.parent.end()
        except Exception as exc:  # Hydra would turn it into a warning and exit 0
            traceback.print_exc()
            raise SystemExit(1) from exc
