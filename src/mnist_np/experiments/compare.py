"""Compare runs from the MLflow store as a pandas table, and draw the comparison figures."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from ..errors import UserError
from ..tracking import liveness
from . import CURVES, RANK_METRIC, comparison_plots, report
from .pruning import PRUNED_EPOCH_TAG

SWEPT = ("train.lr", "train.batch_size", "model.hidden_size")  # always shown; others if they vary
METRICS = (
    RANK_METRIC,
    "val_accuracy",
    "test_accuracy",
    "test_loss",
    "train_loss",
    "epochs_run",
    "kept_epoch",
    "train_seconds",
)
HISTORY_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def varying_params(runs: pd.DataFrame) -> list[str]:
    """Dotted parameter names that differ between runs (an mlflow.search_runs frame), the usual sweep axes first."""
    names = [c[len("params.") :] for c in runs.columns if c.startswith("params.")]
    varying = [n for n in names if runs[f"params.{n}"].nunique(dropna=False) > 1]
    return sorted(varying, key=lambda n: (n not in SWEPT, n))


def _numeric(column: pd.Series) -> pd.Series:
    """MLflow stores params as strings; compare and sort numbers as numbers."""
    try:
        return pd.to_numeric(column)
    except (ValueError, TypeError):
        return column


def _metric(runs: pd.DataFrame, name: str) -> pd.Series | None:
    """A metric's column of an mlflow.search_runs frame; for a per-epoch one (its last value), the
    name under CURVES, or the bare name runs logged before the curves had their own section."""
    curve = runs.get(f"metrics.{CURVES}{name}") if name in HISTORY_METRICS else None
    plain = runs.get(f"metrics.{name}")
    if curve is None or plain is None:
        return plain if curve is None else curve
    return curve.fillna(plain)


def latest_sweep(experiment_id: str) -> str:
    parents = mlflow.search_runs(
        [experiment_id], filter_string="tags.sweep = 'parent'", order_by=["attributes.start_time DESC"], max_results=1
    )
    if parents.empty:
        raise UserError("no sweep in this experiment yet; run `python pipelines/sweep.py -m ...` first")
    return parents["run_id"].iloc[0]


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """The runs table as a person reads it in a terminal: runs by name (ids stay in --csv), and only
    the columns whose values differ between the rows shown, besides the run's status and scores."""
    kept = ("run_name", "status", RANK_METRIC, "test_accuracy")
    shown = table.drop(columns=["run_id", "start_time"], errors="ignore")
    return shown[[c for c in shown.columns if c in kept or shown[c].nunique(dropna=False) > 1]]


def describe_selection(experiment: str, table: pd.DataFrame) -> str:
    """What a runs_table shows, in words: a sweep (named, with its id) or a whole experiment, and
    how many runs --top left out."""
    total = table.attrs.get("total", len(table))
    cut = f" (the best {len(table)} of {total} runs)" if total > len(table) else ""
    return _selection(experiment, table) + cut


def _selection(experiment: str, table: pd.DataFrame) -> str:
    parent_id = table.attrs.get("sweep")
    if not parent_id:
        return f"all runs of experiment {experiment!r}"
    try:
        name = MlflowClient().get_run(parent_id).info.run_name
    except mlflow.exceptions.MlflowException as exc:
        raise UserError(
            f"no sweep run {parent_id!r} in {mlflow.get_tracking_uri()}; pass a parent run id or 'latest'"
        ) from exc
    return f"the runs of sweep {name!r} ({parent_id})"


def runs_table(
    experiment: str, sweep: str | None = None, sort: str = RANK_METRIC, numerics: bool = False
) -> pd.DataFrame:
    """One row per training run (sweep parents left out): swept params and metrics, best first;
    `table.attrs["sweep"]` is the sweep's parent run id, if one was asked for.

    `sweep` is a parent run id or "latest"; `sort` is a metric or parameter name (losses sort
    ascending, everything else descending). `numerics`: also the tags that say what computed each
    run (numerics.py: the mode, the CPU, the BLAS kernels and threads, the versions).
    """
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        raise UserError(
            f"no MLflow experiment {experiment!r} in {mlflow.get_tracking_uri()}; "
            "check --experiment or MLFLOW_TRACKING_URI"
        )
    liveness.close_dead_runs(MlflowClient(), [found.experiment_id])  # so they show as what they are
    if sweep == "latest":
        sweep = latest_sweep(found.experiment_id)
    query = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{sweep}'" if sweep else ""
    runs = mlflow.search_runs([found.experiment_id], filter_string=query)
    if not runs.empty and "tags.sweep" in runs:
        runs = runs[runs["tags.sweep"] != "parent"]
    if runs.empty:
        raise UserError(f"no runs found in experiment {experiment!r}" + (f" for sweep {sweep}" if sweep else ""))

    params = list(dict.fromkeys([*SWEPT, *varying_params(runs), "train.epochs"]))
    table = pd.DataFrame(
        {
            "run_id": runs["run_id"],
            "run_name": runs.get("tags.mlflow.runName"),
            "status": runs["status"],
            "start_time": runs["start_time"],
        }
    )
    for name in params:
        if f"params.{name}" in runs:
            table[name] = _numeric(runs[f"params.{name}"])
    for name in METRICS:
        table[name] = _metric(runs, name)
    if numerics:
        for column in sorted(c for c in runs.columns if c.startswith("tags.numerics.")):
            table[column[len("tags.") :]] = runs[column]
    if "tags.failure" in runs:  # why a run FAILED (training diverged, say)
        table["failure"] = runs["tags.failure"]
    if f"tags.{PRUNED_EPOCH_TAG}" in runs:  # stopped by an Optuna sweep's pruner: not a failure
        stopped = pd.to_numeric(runs[f"tags.{PRUNED_EPOCH_TAG}"], errors="coerce").astype("Int64")
        table.loc[stopped.notna(), "status"] = "PRUNED"
        table["pruned_at_epoch"] = stopped
    for name in ("epochs_run", "kept_epoch"):  # MLflow stores every metric as a float
        table[name] = table[name].astype("Int64")
    if sort not in table:
        raise UserError(
            f"cannot sort by {sort!r}; choose one of {', '.join(c for c in table.columns if c != 'run_id')}"
        )
    table = table.sort_values(sort, ascending="loss" in sort, na_position="last", kind="stable")
    table = table.reset_index(drop=True)
    table.attrs["total"] = len(table)  # describe_selection says how many --top left out
    table.attrs["sweep"] = sweep  # the parent run id "latest" resolved to, for describe_selection
    return table


def best(table: pd.DataFrame, top: int | None) -> pd.DataFrame:
    """The first `top` rows of a runs_table (all of them for None); pandas keeps its attrs."""
    return table.head(top) if top else table


def histories(run_ids: list[str], labels: list[str]) -> dict[str, pd.DataFrame]:
    """Per-epoch metric histories from MLflow, in the layout of reports/training.csv."""
    client = MlflowClient()
    out = {}
    for run_id, label in zip(run_ids, labels):
        columns = {
            m: {
                h.step: h.value
                for h in client.get_metric_history(run_id, CURVES + m) or client.get_metric_history(run_id, m)
            }
            for m in HISTORY_METRICS
        }
        frame = pd.DataFrame(columns).rename_axis("epoch").reset_index()
        if not frame.empty:
            out[f"{label} ({run_id[:8]})"] = frame
    return out


def figures(table: pd.DataFrame, everything: pd.DataFrame | None = None, curves: int = 8) -> dict[str, Figure]:
    """The comparison figures of a runs_table: learning curves of its first `curves` runs, accuracy
    against each varying parameter and against training time, and for two swept parameters a
    heatmap (over the grid of `everything`, the table before --top cut it: a left-out cell says so)."""
    head = table.head(curves)
    drawn = {
        "learning_curves": comparison_plots.learning_curves(histories(list(head["run_id"]), list(head["run_name"])))
    }
    # Parameter columns are the dotted ones; plot those that vary and are numbers.
    swept = [
        c for c in table.columns if "." in c and table[c].nunique() > 1 and pd.api.types.is_numeric_dtype(table[c])
    ]
    scored = table.dropna(subset=[RANK_METRIC])
    if swept and len(scored):
        drawn["accuracy_vs_params"] = comparison_plots.accuracy_vs_params(scored, swept, RANK_METRIC)
    if len(swept) == 2 and len(scored):
        grid = (everything if everything is not None else table)[swept]
        drawn["accuracy_heatmap"] = comparison_plots.accuracy_heatmap(scored, *swept, RANK_METRIC, grid=grid)
    elif len(swept) > 2 and len(scored) > 1:
        drawn["parallel_coordinates"] = comparison_plots.parallel_coordinates(scored, swept, RANK_METRIC)
    if scored["train_seconds"].notna().any():
        drawn["accuracy_vs_time"] = comparison_plots.accuracy_vs_time(
            scored.dropna(subset=["train_seconds"]), RANK_METRIC
        )
    return drawn


def write_figures(table: pd.DataFrame, out_dir: Path, everything: pd.DataFrame | None = None) -> list[Path]:
    """The comparison figures as PNG files, and the best run's confusion matrix and misclassified
    digits (copied from its artifacts)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in figures(table, everything).items():
        figure.savefig(out_dir / f"{name}.png", dpi=110)
        written.append(out_dir / f"{name}.png")
    best_run = table["run_id"].iloc[0]
    for name in ("confusion_matrix.png", "misclassified.png"):
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=best_run, artifact_path=f"plots/{name}", dst_path=str(out_dir / "best")
            )
        except (mlflow.exceptions.MlflowException, OSError):
            continue  # a run that failed before evaluation has no such figure
        written.append(Path(local))
    return written


def register_best(experiment: str, name: str, sweep: str | None = "latest", alias: str = "champion") -> tuple[str, str]:
    """Register the model of the best run (by validation accuracy) and point `alias` at it.

    Returns (run id, model version). Only finished runs that logged a model qualify.
    """
    table = runs_table(experiment, sweep)
    table = table[(table["status"] == "FINISHED") & table[RANK_METRIC].notna()]
    if table.empty:
        raise UserError("no finished run with a validation accuracy to register")
    run_id = table["run_id"].iloc[0]
    version = mlflow.register_model(f"runs:/{run_id}/model", name)
    MlflowClient().set_registered_model_alias(name, alias, version.version)
    return run_id, version.version


def sweep_report(experiment: str, sweep: str, curves: int = 5) -> str:
    """The sweep's self-contained HTML report (report.py): its runs best first with the columns
    that vary, the grid's heatmap (or parallel coordinates for more than two swept parameters),
    accuracy against each parameter and against training time, the best runs' learning curves, and
    the best run's confusion matrix."""
    table = runs_table(experiment, sweep)
    parent = MlflowClient().get_run(table.attrs["sweep"])
    drawn = figures(table, curves=curves)
    sections = [("Runs, best first", report.table(readable(table), ranked=True))]
    headings = {
        "accuracy_heatmap": f"{RANK_METRIC} over the swept grid",
        "parallel_coordinates": "The runs across the swept parameters",
        "accuracy_vs_params": f"{RANK_METRIC} against each swept parameter",
        "accuracy_vs_time": f"{RANK_METRIC} against training time",
        "learning_curves": f"Learning curves of the best {min(curves, len(table))}",
    }
    sections += [(heading, drawn[key]) for key, heading in headings.items() if key in drawn]
    best_run = table.iloc[0]
    try:  # the picture the best run logged, not drawn again
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=best_run["run_id"], artifact_path="plots/confusion_matrix.png", dst_path=tmp
            )
            sections.append((f"Confusion matrix of {best_run['run_name']}", Path(local).read_bytes()))
    except (mlflow.exceptions.MlflowException, OSError):
        pass  # the best run failed or was stopped before its evaluation
    tags = parent.data.tags
    summary = (
        f"{describe_selection(experiment, table)}: {len(table)} runs, "
        f"{tags.get('sweep.failed_jobs', 0)} failed, {tags.get('sweep.pruned_jobs', 0)} pruned. "
        f"Best: <b>{best_run['run_name']}</b>, {RANK_METRIC} {best_run[RANK_METRIC]:.2%}, "
        f"test accuracy {best_run['test_accuracy']:.2%}."
    )
    return report.page(f"Sweep {parent.info.run_name}", summary, sections)
