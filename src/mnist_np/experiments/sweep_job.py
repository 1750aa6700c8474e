"""One job of a Hydra sweep: train and evaluate with the job's configuration as an MLflow child run
of the sweep's parent, on the job's share of the cores, wherever the launcher runs it (in the
sweep's process, a joblib worker, a Ray task on another node)."""

from __future__ import annotations

import gc
import logging
import math
import os
import sys
from pathlib import Path

import mlflow
from hydra.core.hydra_config import HydraConfig
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from omegaconf import DictConfig

from .. import cli
from ..data import splits
from ..errors import UserError
from ..tracking import liveness, runs, store
from ..training import cores
from . import PARENT_ENV, job_runs, pruning, stages
from .job_data import fetch_processed, processed_dir, project_root
from .sweep_check import validated

log = logging.getLogger(__name__)


def ray_node() -> dict[str, str]:
    """Which Ray node runs this job, when a Ray worker does (hydra/launcher=mnist_ray)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return {}
    node_id = ray.get_runtime_context().get_node_id()
    address = next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id), "")
    return {"ray.node_id": node_id, "ray.node_ip": address}


def run_job(cfg_node: DictConfig) -> float | pruning.Pruned:
    """One Hydra job: train and evaluate with `cfg_node`, as a child of the sweep's parent run.

    Outputs go to the job's Hydra output directory. Returns the validation accuracy of the kept
    weights (the best epoch's with early stopping), which is what the Optuna sweeper maximises;
    NaN when the job failed (its run is FAILED with the reason), which Optuna records as a failed
    trial; pruning.Pruned when the study's pruner stopped it (its run is KILLED, tagged `pruned`).
    """
    cli.stop_on_sigterm()  # in a worker process too: a stopped job still ends its run KILLED
    cli.quiet_mlflow()
    # What exists now (the libraries, what earlier jobs of this process keep) moves out of the
    # garbage collector's sight, so its full collections during the job walk only the job's own
    # objects: each job of a process otherwise pays for a heap that grows (27-job grid: 10% faster).
    gc.collect()
    gc.freeze()
    with cores.share():  # the whole job on its slice of the cores while other jobs run beside it
        return _run_job(cfg_node)


def _run_job(cfg_node: DictConfig) -> float | pruning.Pruned:
    cfg = validated(cfg_node)
    hydra = HydraConfig.get()
    root = project_root(hydra)
    fetch_processed(root)
    processed, _ = processed_dir(root, cfg)
    data = stages.load_training_data(cfg, processed)
    test = splits.load(processed, "test")
    out_dir = Path(hydra.runtime.output_dir)
    experiment_id = store.setup(cfg.tracking.experiment, root, wait_s=cfg.tracking.job_wait_s)
    tags = runs.run_tags(root, data.checksums, "hydra-sweep")
    if os.environ.get(PARENT_ENV):  # a multirun; a single `python pipelines/sweep.py key=value` has no parent
        tags.update({MLFLOW_PARENT_RUN_ID: os.environ[PARENT_ENV], job_runs.JOB_TAG: str(hydra.job.num)})
    tags.update(ray_node())
    report = pruning.reporter_from_env()  # an Optuna sweep that prunes: report each epoch to the trial
    # Ray runs a job again when the node running it died: this attempt then continues that attempt's run.
    earlier = job_runs.lost_attempt(MlflowClient(), experiment_id, hydra.job.num)
    if earlier is not None:
        job_runs.continue_lost(MlflowClient(), earlier)
    opened = (
        {"run_id": earlier.info.run_id}
        if earlier is not None
        else {"experiment_id": experiment_id, "run_name": stages.run_name(cfg), "tags": tags}
    )
    try:
        with liveness.start_run(**opened), runs.ended_on_failure():
            mlflow.set_tags(tags)  # a continued run: the node and host of this attempt
            try:
                fit = stages.train(
                    cfg, data, out_dir, out_dir / stages.HISTORY_FILE, progress=False, after_epoch=report
                )
            except pruning.Pruned as pruned:  # its epochs are in the run; it ends KILLED, tagged why
                mlflow.set_tags({pruning.PRUNED_TAG: str(pruned), pruning.PRUNED_EPOCH_TAG: str(pruned.epoch)})
                mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
                log.info("job %d (%s) pruned at %s", hydra.job.num, stages.run_name(cfg), pruned)
                return pruned
            stages.log_test_input(cfg, test, processed)
            stages.evaluate(fit.params, test, out_dir)
    except UserError as exc:  # training diverged, or the data went bad since the sweep started
        log.error("error: job %d (%s) failed: %s", hydra.job.num, stages.run_name(cfg), exc)
        return math.nan
    return fit.kept.val_accuracy
