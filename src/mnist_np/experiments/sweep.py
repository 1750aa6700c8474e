"""Hydra sweeps logged to MLflow: one parent run per multirun, one nested child run per job.

`SweepCallback` (registered under `hydra.callbacks` in conf/config.yaml) runs in the launching
process: before any job starts it validates the config, checks the prepared data, makes sure the
store and experiment exist (so parallel workers never race to create them) and opens the parent
run; when the sweep ends it records the best child's parameters and metrics on the parent. Jobs
find the parent through a file in the sweep directory, which works for every launcher, in-process
or in worker processes.
"""

from __future__ import annotations

import atexit
import logging
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from omegaconf import DictConfig, OmegaConf

from .. import config
from ..data import splits
from ..errors import UserError
from ..tracking import runs, store
from . import plots, stages
from .compare import RANK_METRIC, SWEPT, varying_params

log = logging.getLogger(__name__)
PARENT_FILE = "mlflow_parent_run_id"
PROCESSED_DIR = Path("data") / "processed"


def _validated(cfg: DictConfig) -> config.Config:
    """The job's parameters checked against the schema (the `hydra` node is Hydra's, not ours)."""
    return config.validate({key: OmegaConf.to_container(cfg[key], resolve=True) for key in cfg if key != "hydra"})


def _processed_dir(root: Path, cfg: config.Config) -> Path:
    """data/processed/, checked against the job's data settings: a sweep trains on the data the
    normalize stage prepared and cannot change how it was prepared."""
    processed = root / PROCESSED_DIR
    stats = splits.load_stats(processed)  # a clear error naming `dvc repro normalize` when it is missing
    prepared = {"data.standardize": stats["standardize"], "data.val_size": stats["sizes"]["val"]}
    wanted = {"data.standardize": cfg.data.standardize, "data.val_size": cfg.data.val_size}
    if prepared != wanted:
        differ = ", ".join(f"{k}={wanted[k]} (prepared: {prepared[k]})" for k in wanted if wanted[k] != prepared[k])
        raise UserError(
            f"{processed} was prepared with other data settings: {differ}. Sweep only model.* and "
            "train.* here, or prepare the data first (make params ARGS=... && dvc repro normalize)"
        )
    return processed


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.uri: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        root = store.repo_root()
        try:
            cfg = _validated(config)
            _processed_dir(root, cfg)
        except UserError as exc:
            # Hydra turns a callback's exceptions into warnings and starts the jobs anyway;
            # bad input must stop the sweep before any job or run exists.
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from exc
        experiment_id = store.setup(cfg.tracking.experiment, root)
        self.uri = mlflow.get_tracking_uri()
        hydra = config.hydra
        overrides = " ".join(hydra.overrides.task)
        tags = {
            "entry_point": "hydra-sweep",
            "sweep": "parent",
            **runs.git_tags(root),
            "sweep.started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "sweep.dir": str(Path(hydra.sweep.dir).resolve()),
        }
        client = MlflowClient(self.uri)
        self.parent_id = client.create_run(experiment_id, run_name=f"sweep {overrides}"[:250], tags=tags).info.run_id
        client.log_param(self.parent_id, "sweep.overrides", overrides[:6000])
        client.log_param(self.parent_id, "sweep.launcher", hydra.launcher._target_)
        client.log_param(self.parent_id, "sweep.sweeper", hydra.sweeper._target_)
        sweep_dir = Path(hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_FILE).write_text(self.parent_id)
        # If the sweep dies (a job raises, Ctrl-C), the parent must not stay RUNNING.
        atexit.register(self._close, "FAILED")
        log.info("MLflow parent run %s in %s", self.parent_id, self.uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_id is None:
            return
        client = MlflowClient(self.uri)
        experiment_id = client.get_run(self.parent_id).info.experiment_id
        children = mlflow.search_runs(
            [experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent_id}'"
        )
        finished = children[children["status"] == "FINISHED"] if len(children) else children
        client.set_tag(self.parent_id, "sweep.children", str(len(children)))
        if len(finished):
            best = finished.sort_values(f"metrics.{RANK_METRIC}", ascending=False).iloc[0]
            client.set_tag(self.parent_id, "best_run_id", best["run_id"])
            swept = varying_params(finished)
            for name in swept or list(SWEPT):
                client.log_param(self.parent_id, f"best.{name}", best[f"params.{name}"])
            for name, metric in (
                ("best_val_accuracy", RANK_METRIC),
                ("best_test_accuracy", "test_accuracy"),
                ("best_test_loss", "test_loss"),
            ):
                client.log_metric(self.parent_id, name, float(best[f"metrics.{metric}"]))
            if swept:
                frame = finished.rename(
                    columns=lambda c: c.split(".", 1)[1] if c.startswith(("params.", "metrics.")) else c
                )
                client.log_figure(
                    self.parent_id, plots.accuracy_vs_params(frame, swept), "plots/accuracy_vs_params.png"
                )
            log.info(
                "best of %d runs: %s (val accuracy %.4f)", len(finished), best["run_id"], best[f"metrics.{RANK_METRIC}"]
            )
        self._close("FINISHED")

    def _close(self, status: str) -> None:
        if self.parent_id is not None:
            MlflowClient(self.uri).set_terminated(self.parent_id, status)
            self.parent_id = None


def run_job(cfg_node: DictConfig) -> float:
    """One Hydra job: train and evaluate with `cfg_node`, as a child of the sweep's parent run.

    Outputs go to the job's Hydra output directory. Returns the validation accuracy of the kept
    weights (the best epoch's with early stopping), which is what the Optuna sweeper maximises.
    """
    cfg = _validated(cfg_node)
    root = store.repo_root()
    processed = _processed_dir(root, cfg)
    hydra = HydraConfig.get()
    out_dir = Path(hydra.runtime.output_dir)
    parent_file = Path(hydra.sweep.dir) / PARENT_FILE
    experiment_id = store.setup(cfg.tracking.experiment, root)
    tags = runs.run_tags(root, stages.data_checksums(processed), "hydra-sweep")
    if parent_file.is_file():  # multirun; a single `python pipelines/sweep.py key=value` run has no parent
        tags.update({MLFLOW_PARENT_RUN_ID: parent_file.read_text().strip(), "sweep.job": str(hydra.job.num)})
    with mlflow.start_run(experiment_id=experiment_id, run_name=stages.run_name(cfg), tags=tags):
        fit = stages.train(cfg, processed, out_dir, out_dir / stages.HISTORY_FILE, progress=False)
        stages.evaluate(fit.params, processed, out_dir)
    return fit.kept.val_accuracy
