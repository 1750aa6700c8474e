"""The sweep's parent run: Hydra sweeps logged to MLflow as one parent run per multirun, one nested
child run per job (sweep_job.py).

`SweepParent` is what the sweep's Hydra callback (sweep_callback.py) does in the launching process:
before any job starts it checks every combination the sweep will launch (for Optuna, every bound and
choice of the search space) against the schema and the prepared data, makes sure the store and
experiment exist (so parallel workers never race to create them) and opens the parent run. Jobs find
the parent, the store and the project through environment variables, set in each job by Hydra
wherever it runs (launching.hand_to_jobs). When the sweep ends, however it ends, the parent records
the best finished child and ends FINISHED, FAILED (some job failed) or KILLED.

A job that fails (training diverged, say) ends its own run FAILED with the reason and the sweep
goes on with the others; the sweep then exits with status 3.

A grid sweep that did not finish (stopped, a job failed) is resumed with the same overrides and
`hydra.sweeper.resume=<its parent run id>`: the new parent takes the earlier one's job runs over
(job_runs.adopt), its FINISHED jobs are not run again, and the earlier parent is deleted.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import shlex
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE
from omegaconf import DictConfig

from .. import cli, files
from ..errors import UserError
from ..tracking import liveness, runs, store, ui
from . import PARENT_ENV, RANK_METRIC, ROOT_ENV, comparison_plots, job_runs, launching, pruning, report
from .compare import SWEPT, latest_sweep, sweep_report, varying_params
from .job_data import project_root
from .sweep_check import check_sweep

log = logging.getLogger(__name__)
RESUMED_TAG = "sweep.resumed_from"  # on a resumed sweep's parent: the parent run it took the jobs of
RESUMED_AS_TAG = "sweep.resumed_as"  # on that (deleted) parent: the sweep that resumed it


def _parent_children(client: MlflowClient, parent_id: str):
    experiment_id = client.get_run(parent_id).info.experiment_id
    return mlflow.search_runs([experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}'")


_OPEN: list[SweepParent] = []  # sweeps of this process whose parent run is still open
# Their parents' heartbeats: kept out of the sweep, which Hydra ships to every job with its callback
# (a thread cannot be pickled).
_HEARTBEATS: dict[str, liveness.Heartbeat] = {}


def end_open_sweeps(status: str) -> None:
    """End every open sweep's parent (after Ctrl-C or SIGTERM: KILLED; at exit: FAILED)."""
    for sweep in list(_OPEN):
        sweep.finish(status)


class SweepParent:
    """A sweep's MLflow parent run, opened before its first job (`open`) and ended after its last
    (`end`), or by `finish` however the sweep stops."""

    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.uri: str | None = None
        self.resume_hint: str | None = None

    def open(self, config: DictConfig) -> None:
        """Check the sweep's combinations, then open its parent run and hand it to every job."""
        root = project_root(config.hydra)
        hydra = config.hydra
        overrides = " ".join(hydra.overrides.task)
        resumed = hydra.sweeper.get("resume")
        cfg = check_sweep(root, config.hydra)
        experiment_id = store.setup(cfg.tracking.experiment, root)
        if resumed:
            check_resumable(MlflowClient(), str(resumed), experiment_id, overrides)
        self.uri = mlflow.get_tracking_uri()
        tags = {
            "entry_point": "hydra-sweep",
            "sweep": "parent",
            **runs.git_tags(root),
            "sweep.started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "sweep.dir": str(Path(hydra.sweep.dir).resolve()),
            **liveness.owner_tags(),  # the sweep's process: if it dies outright, the next command closes the parent
            **({RESUMED_TAG: str(resumed)} if resumed else {}),
        }
        client = MlflowClient(self.uri)
        self.parent_id = client.create_run(experiment_id, run_name=f"sweep {overrides}"[:250], tags=tags).info.run_id
        _HEARTBEATS[self.parent_id] = liveness.Heartbeat(self.parent_id, self.uri).start()
        _OPEN.append(self)
        # However the sweep ends (a crash, Ctrl-C, SIGTERM, a failure below), the parent must not stay RUNNING.
        atexit.register(self.finish, "FAILED")
        if resumed:
            moved = job_runs.adopt(client, experiment_id, str(resumed), self.parent_id)
            client.set_tag(str(resumed), RESUMED_AS_TAG, self.parent_id)
            client.delete_run(str(resumed))
            log.info("resuming sweep %s: its %d job runs are this sweep's now", resumed, moved)
        # Only a grid sweep resumes this way (an Optuna study resumes by its study_name).
        self.resume_hint = (
            f"python pipelines/sweep.py -m {shlex.join(hydra.overrides.task)} hydra.sweeper.resume={self.parent_id}"
            if "resume" in hydra.sweeper
            else None
        )
        client.log_param(self.parent_id, "sweep.overrides", overrides[:6000])
        client.log_param(self.parent_id, "sweep.launcher", hydra.launcher._target_)
        client.log_param(self.parent_id, "sweep.sweeper", hydra.sweeper._target_)
        space = hydra.sweeper.get("params")
        if space:  # Optuna's search space (a key swept on the command line replaces its entry)
            client.log_param(self.parent_id, "sweep.search_space", ", ".join(f"{k}: {v}" for k, v in space.items()))
            client.log_param(self.parent_id, "sweep.sampler_seed", hydra.sweeper.get("seed"))
        shared = {PARENT_ENV: self.parent_id, ROOT_ENV: str(root), "MLFLOW_TRACKING_URI": self.uri}
        os.environ.update(shared)  # for the jobs the basic launcher runs here, and job_runs
        launching.hand_to_jobs(config, shared)
        log.info("MLflow parent run %s in %s", self.parent_id, self.uri)

    def end(self) -> None:
        """The sweep ran all its jobs: record the best child and end the parent; exit with status 3
        when a job failed."""
        if self.parent_id is None:
            return
        failed = self.finish("FINISHED")
        if failed:
            named = ", ".join(failed[:10]) + (f" and {len(failed) - 10} more" if len(failed) > 10 else "")
            print(
                f"error: {len(failed)} job(s) of the sweep failed ({named}); their runs are FAILED with the "
                f"reason in the tag '{runs.FAILURE_TAG}'; the others are in MLflow "
                "(python pipelines/compare.py --sweep latest)",
                file=sys.stderr,
            )
            raise SystemExit(cli.EXIT_DIVERGED)

    def finish(self, status: str) -> int:
        """Record the best finished child on the parent and end it: FAILED if `status` is FINISHED
        but a job failed. Children left RUNNING by stopped workers end KILLED. Returns the failed jobs,
        each named by its number and run."""
        if self.parent_id is None:
            return 0
        parent_id, self.parent_id = self.parent_id, None
        _HEARTBEATS.pop(parent_id).stop()
        _OPEN.remove(self)
        os.environ.pop(PARENT_ENV, None)
        os.environ.pop(ROOT_ENV, None)
        client = MlflowClient(self.uri)
        children = _parent_children(client, parent_id)
        for run_id in children.loc[children["status"] == "RUNNING", "run_id"] if len(children) else []:
            client.set_terminated(run_id, "KILLED")
        failed = failed_jobs(children)
        finished = children[children["status"] == "FINISHED"] if len(children) else children
        client.set_tag(parent_id, "sweep.children", str(len(children)))
        client.set_tag(parent_id, "sweep.failed_jobs", str(len(failed)))
        pruned, saved = pruning_savings(children)
        if pruned:
            client.set_tag(parent_id, "sweep.pruned_jobs", str(pruned))
            client.set_tag(parent_id, "sweep.pruned_epochs_saved", f"{saved:.0%}")
        try:
            if len(finished):
                self._record_best(client, parent_id, finished)
        finally:  # the parent ends however recording its summary went
            client.set_terminated(parent_id, "FAILED" if status == "FINISHED" and failed else status)
        if len(finished) and status == "FINISHED":  # a stopped sweep's report: `make report`
            show(client, client.get_run(parent_id))
        if self.resume_hint and (status != "FINISHED" or failed):
            print(f"note: to run its unfinished jobs (only those): {self.resume_hint}", file=sys.stderr)
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
                parent_id,
                comparison_plots.accuracy_vs_params(frame, swept, RANK_METRIC),
                "plots/accuracy_vs_params.png",
            )
        parent = client.get_run(parent_id)
        experiment_id = parent.info.experiment_id
        client.set_tag(parent_id, MLFLOW_RUN_NOTE, describe(parent, ranked, swept, experiment_id))
        client.update_run(parent_id, name=result_name(parent, swept, best))
        shown = ", ".join(f"{name}={best[f'params.{name}']}" for name in swept or SWEPT)
        log.info(
            "best of %d runs: %s (%s): validation accuracy %.2f%%, test accuracy %.2f%%",
            len(finished),
            best["tags.mlflow.runName"],
            shown,
            100 * best[f"metrics.{RANK_METRIC}"],
            100 * best.get("metrics.test_accuracy", math.nan),
        )


def failed_jobs(children: pd.DataFrame) -> list[str]:
    """The sweep's FAILED jobs, as `job N (run name)`, in job order."""
    if not len(children):
        return []
    failed = children[children["status"] == "FAILED"]
    column = f"tags.{job_runs.JOB_TAG}"
    numbers = pd.to_numeric(failed[column], errors="coerce") if column in failed else pd.Series(math.nan, failed.index)
    named = sorted(zip(numbers.fillna(math.inf), failed["tags.mlflow.runName"]))
    return [f"job {int(number)} ({name})" if number != math.inf else str(name) for number, name in named]


def check_resumable(client: MlflowClient, parent_id: str, experiment_id: str, overrides: str) -> None:
    """A UserError unless `parent_id` is a grid sweep of this experiment, run with these same
    overrides (so its jobs have the numbers this sweep gives them), that is no longer running."""
    try:
        earlier = client.get_run(parent_id)
    except mlflow.exceptions.MlflowException as exc:
        raise UserError(
            f"hydra.sweeper.resume={parent_id}: no such run in {client.tracking_uri}; give the parent run id "
            "the stopped sweep printed"
        ) from exc
    if RESUMED_AS_TAG in earlier.data.tags:
        raise UserError(
            f"hydra.sweeper.resume={parent_id}: that sweep was resumed as {earlier.data.tags[RESUMED_AS_TAG]}; "
            "resume that one"
        )
    if earlier.data.tags.get("sweep") != "parent" or earlier.info.experiment_id != experiment_id:
        raise UserError(f"hydra.sweeper.resume={parent_id}: not a sweep's parent run in this experiment")
    ran = earlier.data.params.get("sweep.overrides", "")
    if ran != overrides:
        raise UserError(
            f"hydra.sweeper.resume={parent_id}: that sweep ran `{ran}`, this one `{overrides}`; resume it with "
            "the same overrides"
        )
    if earlier.info.status == "RUNNING" and liveness.why_dead(earlier.data.tags, time.time()) is None:
        raise UserError(f"hydra.sweeper.resume={parent_id}: that sweep is still running; stop it first")


def show_sweep(experiment: str, sweep: str = "latest", out: Path | None = None) -> None:
    """Rebuild a sweep's report and print where to look (`make report`); `sweep` is a parent run id
    or "latest"."""
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        raise UserError(f"no MLflow experiment {experiment!r} in {mlflow.get_tracking_uri()}; run a sweep first")
    client = MlflowClient()
    parent_id = latest_sweep(found.experiment_id) if sweep == "latest" else sweep
    try:
        parent = client.get_run(parent_id)
    except mlflow.exceptions.MlflowException as exc:
        raise UserError(
            f"no sweep run {parent_id!r} in {client.tracking_uri}; pass a parent run id or 'latest'"
        ) from exc
    show(client, parent, out)


def show(client: MlflowClient, parent, out: Path | None = None) -> None:
    """The sweep's report (written to `out`, by default in the sweep's folder, and logged to the
    parent) and, last, the link to its runs table in the MLflow UI: best first, with the scores and
    the swept parameters as columns."""
    children = _parent_children(client, parent.info.run_id)
    finished = children[children["status"] == "FINISHED"] if len(children) else children
    if not len(finished):
        raise UserError(f"sweep {parent.info.run_name!r} has no finished run to report on")
    folder = Path(parent.data.tags.get("sweep.dir", "."))
    path = out or (folder if folder.is_dir() else Path.cwd()) / report.REPORT_FILE
    try:
        experiment = client.get_experiment(parent.info.experiment_id).name
        with files.atomic_path(path) as tmp:
            tmp.write_text(sweep_report(experiment, parent.info.run_id), encoding="utf-8")
        client.log_artifact(parent.info.run_id, str(path))
        log.info("the sweep's report: %s", path)
    except (mlflow.exceptions.MlflowException, OSError) as exc:  # the runs are safe in MLflow
        log.warning("the sweep's report could not be written (%s); `make report` writes it again", exc)
    log.info("the sweep's runs, best first: %s", sweep_link(client, parent, children))
    hint = ui.ui_hint(client.tracking_uri)
    if hint:
        log.info(hint)


def sweep_link(client: MlflowClient, parent, children: pd.DataFrame | None = None) -> str:
    """The link to the sweep's runs table in the MLflow UI (saved as a shared view): its children
    best first, with the validation and test accuracy, the swept parameters and, where the pruner
    stopped runs, the epoch it stopped them at; as few columns as answer the question, so that they
    fit beside the Assistant panel MLflow 3.17 opens on a first visit."""
    if children is None:
        children = _parent_children(client, parent.info.run_id)
    finished = children[children["status"] == "FINISHED"] if len(children) else children
    pruned, _ = pruning_savings(children)
    return ui.sweep_view(
        client,
        parent.info.experiment_id,
        parent.info.run_id,
        [RANK_METRIC, "test_accuracy"],
        varying_params(finished) or list(SWEPT),
        [pruning.PRUNED_EPOCH_TAG] if pruned else [],
    )


def result_name(parent, swept: list[str], best) -> str:
    """The sweep's parent named with its answer, so the runs table shows it without a click:
    `grid lr x hidden_size: 95.1% h64-lr0.3-b32-e5` (the kind of sweep, the swept keys, the best
    child's validation accuracy and name)."""
    kind = "optuna" if parent.data.params.get("sweep.sweeper", "").endswith("OptunaSweeper") else "grid"
    axes = " x ".join(name.rsplit(".", 1)[-1] for name in swept) or "sweep"
    return f"{kind} {axes}: {best[f'metrics.{RANK_METRIC}']:.1%} {best['tags.mlflow.runName']}"


def pruning_savings(children) -> tuple[int, float]:
    """How many of a sweep's children the pruner stopped, and the share of all planned epochs
    (train.epochs of every child) they did not train."""
    column = f"tags.{pruning.PRUNED_EPOCH_TAG}"
    if not len(children) or column not in children:
        return 0, 0.0
    planned = pd.to_numeric(children["params.train.epochs"], errors="coerce")
    stopped = pd.to_numeric(children[column], errors="coerce")
    pruned = stopped.notna()
    return int(pruned.sum()), float((planned[pruned] - stopped[pruned]).sum() / planned.sum())


def describe(parent, ranked, swept: list[str], experiment_id: str, top: int = 5) -> str:
    """The parent run's Markdown description: what was swept and how, and the best runs."""
    params, tags = parent.data.params, parent.data.tags
    pruned = (
        f", {tags['sweep.pruned_jobs']} pruned: {tags['sweep.pruned_epochs_saved']} of the planned epochs not trained"
        if "sweep.pruned_jobs" in tags
        else ""
    )
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
            f"- jobs: {tags.get('sweep.children', len(ranked))} ({tags.get('sweep.failed_jobs', 0)} failed"
            f"{pruned}); seed: {best.get('params.train.seed', '')}",
            f"- best: [{best['tags.mlflow.runName']}](#/experiments/{experiment_id}/runs/{best['run_id']}), "
            f"ranked by {RANK_METRIC}",
            "",
            "| run | " + " | ".join(columns) + " |",
            "|" + " --- |" * (len(columns) + 1),
            *rows,
        ]
    )
