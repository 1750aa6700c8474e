"""Hydra sweeps logged to MLflow: one parent run per multirun, one nested child run per job.

`SweepCallback` (registered under `hydra.callbacks` in conf/config.yaml) runs in the launching
process: before any job starts it checks every combination the sweep will launch (for Optuna,
every bound and choice of the search space) against the schema and the prepared data, makes sure
the store and experiment exist (so parallel workers never race to create them) and opens the
parent run. Jobs find the parent through an environment variable, which in-process jobs and
worker processes started afterwards inherit. When the sweep ends, however it ends, the parent
records the best finished child and ends FINISHED, FAILED (some job failed) or KILLED.

A job that fails (training diverged, say) ends its own run FAILED with the reason and the sweep
goes on with the others; the sweep then exits with status 3.
"""

from __future__ import annotations

import atexit
import copy
import gc
import itertools
import logging
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE
from omegaconf import DictConfig, ListConfig, OmegaConf

from .. import cli, composition, config, numerics
from ..data import splits
from ..errors import ConfigError, DataError, UserError
from ..files import sha256_file
from ..tracking import runs, store
from ..training import cores, loop
from . import comparison_plots, search, stages
from .compare import RANK_METRIC, SWEPT, varying_params

log = logging.getLogger(__name__)
PARENT_ENV = "MNIST_NP_SWEEP_PARENT_RUN_ID"
ROOT_ENV = "MNIST_NP_ROOT"
PROCESSED_DIR = Path("data") / "processed"


def _validated(cfg: DictConfig) -> config.Config:
    """The job's parameters checked against the schema (the `hydra` node is Hydra's, not ours)."""
    return config.validate({key: OmegaConf.to_container(cfg[key], resolve=True) for key in cfg if key != "hydra"})


def project_root(hydra_cfg: DictConfig) -> Path:
    """The project a sweep belongs to. The launching process decides and tells its jobs through
    $MNIST_NP_ROOT (a Ray worker starts in its node's own directory): the checkout it runs in (or a
    folder with data/processed/ of its own), else, started from anywhere, the checkout holding the
    conf/ the sweep was composed from."""
    given = os.environ.get(ROOT_ENV)
    if given and Path(given).is_dir():
        return Path(given)
    here = store.repo_root()
    if (here / "dvc.yaml").is_file() or (here / PROCESSED_DIR).is_dir():
        return here
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "main" and source.schema == "file":
            return store.repo_root(Path(source.path).parent)
    return here


def fetch_processed(root: Path) -> None:
    """On a node whose checkout lacks data/processed/ (a Ray worker on another machine), get the
    prepared data from the DVC remote by the hashes dvc.lock records, then check each file against
    the SHA-256 the normalize stage recorded in stats.json (DVC does not re-hash what it downloads
    unless the remote says `verify = true`). Damaged data is removed, never trained on."""
    processed = root / PROCESSED_DIR
    if (processed / splits.STATS_FILE).is_file() or not (root / "dvc.lock").is_file():
        return
    log.info("%s is not on this node: dvc pull from the remote", processed)
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"
    done = subprocess.run([dvc, "pull", "--quiet", str(PROCESSED_DIR)], cwd=root, capture_output=True, text=True)
    if done.returncode:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(
            f"{processed} is missing and `dvc pull` could not get it ({reason}); run "
            "`dvc push` where the data was prepared, or `dvc repro normalize` here"
        )
    recorded = splits.load_stats(processed)["processed_sha256"]
    damaged = [name for name, digest in recorded.items() if sha256_file(processed / name) != digest]
    if damaged:
        shutil.rmtree(processed)
        raise DataError(
            f"{', '.join(damaged)} pulled from the DVC remote into {processed} do not match the SHA-256 recorded "
            "when the data was prepared (removed again); the remote's copy is damaged: `dvc push` it again "
            "from a good copy, or run `dvc repro normalize` here"
        )


def _processed_dir(root: Path, cfg: config.Config) -> tuple[Path, dict]:
    """data/processed/ and its statistics, checked against the job's data settings: a sweep trains
    on the data the normalize stage prepared and cannot change how it was prepared."""
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
    return processed, stats


def _combinations(task_overrides: list[str], search_space: dict[str, str]) -> list[list[str]]:
    """The override lists a sweep can launch, for checking before the first job: every combination
    of a grid (lists, range(), choice()), and every bound of an interval() (Optuna samples between)."""
    candidates = []
    for override in search.sweep_overrides(task_overrides, search_space):  # what the Optuna sweeper sees
        prefix = "++" if override.is_force_add() else "+" if override.is_add() else ""
        if not override.is_sweep_override():
            values = [override.get_value_element_as_str()]
        elif override.is_interval_sweep():
            values = [str(override.value().start), str(override.value().end)]
        else:
            values = list(override.sweep_string_iterator())
        candidates.append([f"{prefix}{override.key_or_group}={value}" for value in values])
    return [list(combination) for combination in itertools.product(*candidates)]


def _with_values(base: DictConfig, first: list[str], overrides: list[str]) -> DictConfig | None:
    """The config composed from `overrides`, made from `base` (composed from `first`) by setting the
    values that differ the way Hydra sets a plain `key=value`: composing again reads every config
    file (~50 ms, ~1.3 s of a 27-job grid's start). None when a differing override is anything else
    (a config group, +key, ++key, ~key, a key that is missing or null in `base`): that needs Hydra."""
    changed = [override for override, was in zip(overrides, first) if override != was]
    cfg = copy.deepcopy(base)
    for override in OverridesParser.create().parse_overrides(changed):
        if override.is_add() or override.is_force_add() or override.is_delete() or override.package is not None:
            return None
        current = OmegaConf.select(cfg, override.key_or_group, default=None, throw_on_missing=False)
        if current is None or isinstance(current, (DictConfig, ListConfig)):
            return None
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
    return cfg


def check_sweep(root: Path, hydra_cfg: DictConfig) -> config.Config:
    """Check every combination the sweep will launch; return the first, validated. The sweep process
    takes the combinations' numerics (numerics.require) before any job starts, and its jobs inherit it."""
    params = hydra_cfg.sweeper.get("params")  # Optuna's search space; None for the basic sweeper
    space = OmegaConf.to_container(params, resolve=False) if params else {}
    fetch_processed(root)
    first = None
    combinations = _combinations(list(hydra_cfg.overrides.task), space)
    name = hydra_cfg.job.config_name
    base = composition.compose_node(name, combinations[0])
    for overrides in combinations:
        quick = _with_values(base, combinations[0], overrides)
        cfg = _validated(quick if quick is not None else composition.compose_node(name, overrides))
        _, stats = _processed_dir(root, cfg)
        # A job checks the data it loads itself.
        loop.check_feasible(cfg.train, stats["sizes"]["train"], math.prod(stats["image_shape"]))
        first = first or cfg
        if cfg.train.numerics != first.train.numerics:
            raise ConfigError(
                "train.numerics cannot change within a sweep (its jobs share the sweep's processes); "
                "run one sweep per value"
            )
    numerics.require(first.train.numerics)
    return first


def _parent_children(client: MlflowClient, parent_id: str):
    experiment_id = client.get_run(parent_id).info.experiment_id
    return mlflow.search_runs([experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}'")


_OPEN: list[SweepCallback] = []  # sweeps of this process whose parent run is still open


def end_open_sweeps(status: str) -> None:
    """End every open sweep's parent (after Ctrl-C or SIGTERM: KILLED; at exit: FAILED)."""
    for callback in list(_OPEN):
        callback.finish(status)


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.uri: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        root = project_root(config.hydra)
        try:
            cfg = check_sweep(root, config.hydra)
            experiment_id = store.setup(cfg.tracking.experiment, root)
        # Hydra turns a callback's exceptions into warnings and starts the jobs anyway, without a
        # parent run; whatever goes wrong here must stop the sweep before any job or run exists.
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(cli.EXIT_USER_ERROR) from exc
        except Exception as exc:
            traceback.print_exc()
            raise SystemExit(1) from exc
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
        space = hydra.sweeper.get("params")
        if space:  # Optuna's search space (a key swept on the command line replaces its entry)
            client.log_param(self.parent_id, "sweep.search_space", ", ".join(f"{k}: {v}" for k, v in space.items()))
            client.log_param(self.parent_id, "sweep.sampler_seed", hydra.sweeper.get("seed"))
        os.environ[PARENT_ENV] = self.parent_id
        os.environ[ROOT_ENV] = str(root)
        _OPEN.append(self)
        # However the sweep ends (a crash, Ctrl-C, SIGTERM), the parent must not stay RUNNING.
        atexit.register(self.finish, "FAILED")
        log.info("MLflow parent run %s in %s", self.parent_id, self.uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_id is None:
            return
        failed = self.finish("FINISHED")
        if failed:
            print(
                f"error: {failed} job(s) of the sweep failed; their runs are FAILED with the reason in the tag "
                f"'{runs.FAILURE_TAG}'; the others are in MLflow (python pipelines/compare.py --sweep latest)",
                file=sys.stderr,
            )
            raise SystemExit(cli.EXIT_DIVERGED)

    def finish(self, status: str) -> int:
        """Record the best finished child on the parent and end it: FAILED if `status` is FINISHED
        but a job failed. Children left RUNNING by stopped workers end KILLED. Returns the failed jobs."""
        if self.parent_id is None:
            return 0
        parent_id, self.parent_id = self.parent_id, None
        _OPEN.remove(self)
        os.environ.pop(PARENT_ENV, None)
        os.environ.pop(ROOT_ENV, None)
        client = MlflowClient(self.uri)
        children = _parent_children(client, parent_id)
        for run_id in children.loc[children["status"] == "RUNNING", "run_id"] if len(children) else []:
            client.set_terminated(run_id, "KILLED")
        failed = int((children["status"] == "FAILED").sum()) if len(children) else 0
        finished = children[children["status"] == "FINISHED"] if len(children) else children
        client.set_tag(parent_id, "sweep.children", str(len(children)))
        client.set_tag(parent_id, "sweep.failed_jobs", str(failed))
        if len(finished):
            self._record_best(client, parent_id, finished)
        client.set_terminated(parent_id, "FAILED" if status == "FINISHED" and failed else status)
        return failed

    @staticmethod
    def _record_best(client: MlflowClient, parent_id: str, finished) -> None:
        """The best child's params and final metrics on the parent under the children's own keys (so
        the runs table lines them up), which child it is, a figure, and a Markdown description."""
        ranked = finished.sort_values(f"metrics.{RANK_METRIC}", ascending=False)
        best = ranked.iloc[0]
        client.set_tag(parent_id, "best_run_id", best["run_id"])
        client.set_tag(parent_id, "best_run_name", best["tags.mlflow.runName"])
        params = [c for c in finished.columns if c.startswith("params.") and isinstance(best[c], str)]
        client.log_batch(parent_id, params=[Param(c[len("params.") :], best[c]) for c in params])
        for metric in (RANK_METRIC, "test_accuracy", "test_loss", "test_macro_f1"):
            if not math.isnan(best.get(f"metrics.{metric}", math.nan)):
                client.log_metric(parent_id, metric, float(best[f"metrics.{metric}"]))
        swept = varying_params(finished)
        if swept:
            frame = finished.rename(
                columns=lambda c: c.split(".", 1)[1] if c.startswith(("params.", "metrics.")) else c
            )
            client.log_figure(
                parent_id, comparison_plots.accuracy_vs_params(frame, swept), "plots/accuracy_vs_params.png"
            )
        experiment_id = client.get_run(parent_id).info.experiment_id
        client.set_tag(parent_id, MLFLOW_RUN_NOTE, describe(client.get_run(parent_id), ranked, swept, experiment_id))
        shown = ", ".join(f"{name}={best[f'params.{name}']}" for name in swept or SWEPT)
        log.info(
            "best of %d runs: %s (%s): validation accuracy %.2f%%, test accuracy %.2f%%; %s",
            len(finished),
            best["tags.mlflow.runName"],
            shown,
            100 * best[f"metrics.{RANK_METRIC}"],
            100 * best.get("metrics.test_accuracy", math.nan),
            store.run_link(experiment_id, best["run_id"], client.tracking_uri),
        )
        log.info("compare the sweep's runs: python pipelines/compare.py --sweep %s", parent_id)


def describe(parent, ranked, swept: list[str], experiment_id: str, top: int = 5) -> str:
    """The parent run's Markdown description: what was swept and how, and the best runs."""
    params = parent.data.params
    best = ranked.iloc[0]
    columns = [*(swept or SWEPT), RANK_METRIC, "test_accuracy"]
    rows = [
        f"| [{row['tags.mlflow.runName']}](#/experiments/{experiment_id}/runs/{row['run_id']}) | "
        + " | ".join(str(row.get(f"params.{c}", row.get(f"metrics.{c}", ""))) for c in columns)
        + " |"
        for _, row in ranked.head(top).iterrows()
    ]
    return "\n".join(
        [
            f"**Sweep** `{params.get('sweep.overrides', '')}`",
            "",
            f"- launcher: `{params.get('sweep.launcher', '')}`, sweeper: `{params.get('sweep.sweeper', '')}`",
            *(
                [
                    f"- search space: `{params['sweep.search_space']}`; sampler seed: "
                    f"{params.get('sweep.sampler_seed')}; Optuna study: `{parent.data.tags.get('optuna.study_name')}`"
                ]
                if "sweep.search_space" in params
                else []
            ),
            f"- jobs: {parent.data.tags.get('sweep.children', len(ranked))} "
            f"({parent.data.tags.get('sweep.failed_jobs', 0)} failed); seed: {best.get('params.train.seed', '')}",
            f"- best: [{best['tags.mlflow.runName']}](#/experiments/{experiment_id}/runs/{best['run_id']}), "
            f"ranked by {RANK_METRIC}",
            "",
            "| run | " + " | ".join(columns) + " |",
            "|" + " --- |" * (len(columns) + 1),
            *rows,
        ]
    )


def ray_node() -> dict[str, str]:
    """Which Ray node runs this job, when a Ray worker does (hydra/launcher=ray)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return {}
    node_id = ray.get_runtime_context().get_node_id()
    address = next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id), "")
    return {"ray.node_id": node_id, "ray.node_ip": address}


def run_job(cfg_node: DictConfig) -> float:
    """One Hydra job: train and evaluate with `cfg_node`, as a child of the sweep's parent run.

    Outputs go to the job's Hydra output directory. Returns the validation accuracy of the kept
    weights (the best epoch's with early stopping), which is what the Optuna sweeper maximises;
    NaN when the job failed (its run is FAILED with the reason), which Optuna records as a failed trial.
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


def _run_job(cfg_node: DictConfig) -> float:
    cfg = _validated(cfg_node)
    hydra = HydraConfig.get()
    root = project_root(hydra)
    fetch_processed(root)
    processed, _ = _processed_dir(root, cfg)
    data = stages.load_training_data(cfg, processed)
    test = splits.load(processed, "test")
    out_dir = Path(hydra.runtime.output_dir)
    experiment_id = store.setup(cfg.tracking.experiment, root)
    tags = runs.run_tags(root, data.checksums, "hydra-sweep")
    if os.environ.get(PARENT_ENV):  # a multirun; a single `python pipelines/sweep.py key=value` has no parent
        tags.update({MLFLOW_PARENT_RUN_ID: os.environ[PARENT_ENV], "sweep.job": str(hydra.job.num)})
    tags.update(ray_node())
    try:
        with (
            mlflow.start_run(experiment_id=experiment_id, run_name=stages.run_name(cfg), tags=tags),
            runs.ended_on_failure(),
        ):
            fit = stages.train(cfg, data, out_dir, out_dir / stages.HISTORY_FILE, progress=False)
            stages.evaluate(fit.params, test, out_dir)
    except UserError as exc:  # training diverged, or the data went bad since the sweep started
        log.error("error: job %d (%s) failed: %s", hydra.job.num, stages.run_name(cfg), exc)
        return math.nan
    return fit.kept.val_accuracy
