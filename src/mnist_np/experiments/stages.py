"""The work of the train and evaluate stages, each in one MLflow run, shared by every entry point.

The DVC entry points (pipelines/train.py, evaluate.py) and the sweep jobs call these, so every run
logs the same things in the same way. One `dvc repro` is one MLflow run: `train_run` opens it and
tags it with the SHA-256 of the weights it wrote; `evaluate_run` finds that run again by the
weights it is given. No run id is written into the pipeline's outputs, so the same data, code and
params reproduce them byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from .. import config, numerics
from ..data import splits
from ..errors import DataError
from ..files import atomic_path, require_writable, sha256_file, write_json
from ..model import reference, weights
from ..serving import pyfunc, reading
from ..tracking import liveness, runs, store, ui
from ..training import loop, metrics
from . import CURVES, comparison_plots, plots, report

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.npz"
HISTORY_FILE = "training.csv"
TRAINING_METRICS_FILE = "training.json"  # the kept epoch and its validation accuracy: DVC metrics
METRICS_FILE = "metrics.json"
CLASSIFICATION_FILE = "classification.json"
PREDICTIONS_FILE = "predictions.csv"
WEIGHTS_TAG = "weights.sha256"  # ties the train stage's run to the weights file it wrote
PIPELINE_ENTRY_POINT = "dvc"


def run_name(cfg: config.Config) -> str:
    """A short MLflow run name with the usual sweep axes, rounded for reading (the params are exact),
    e.g. h10-lr0.1-b32-e30; a DVC experiment's name goes first."""
    name = f"h{cfg.model.hidden_size}-lr{cfg.train.lr:.3g}-b{cfg.train.batch_size}-e{cfg.train.epochs}"
    return f"{os.environ['DVC_EXP_NAME']} {name}" if os.environ.get("DVC_EXP_NAME") else name


def description(cfg: config.Config) -> str:
    """A run's one-line description in the MLflow UI."""
    m, t = cfg.model, cfg.train
    options = [
        f"momentum {t.momentum:g}" if t.momentum else "",
        f"weight decay {t.weight_decay:g}" if t.weight_decay else "",
        f"lr decay {t.lr_decay:g}" if t.lr_decay != 1 else "",
        f"early stopping after {t.early_stopping}" if t.early_stopping else "",
    ]
    return ", ".join(
        [
            f"784-{m.hidden_size}-10 ReLU/softmax network ({m.init} init)",
            f"SGD lr {t.lr:g}",
            f"batch {t.batch_size}",
            f"{t.epochs} epochs",
            *filter(None, options),
            f"seed {t.seed}",
        ]
    )


def data_checksums(processed_dir: Path) -> dict[str, str]:
    """SHA-256 of the raw downloads and of the processed training data, as normalize recorded them."""
    stats = splits.load_stats(processed_dir)
    processed = stats["processed_sha256"]
    return {**stats["raw_sha256"], **{name: processed[name] for name in ("train.npz", "val.npz")}}


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The processed training and validation splits, loaded and checked before any run opens."""

    train: splits.Split
    val: splits.Split
    stats_path: Path  # the normalize stage's statistics, logged with the served model
    checksums: dict[str, str]


def load_training_data(cfg: config.Config, processed_dir: str | Path) -> TrainingData:
    """Everything training reads from disk, checked, so that bad data or settings that cannot work
    on it fail with one line before an MLflow run exists. First the numerics the configuration asks
    for: a command started with the other mode runs itself again here."""
    numerics.require(cfg.train.numerics)
    processed_dir = Path(processed_dir)
    checksums = data_checksums(processed_dir)
    data = TrainingData(
        splits.load(processed_dir, "train"),
        splits.load(processed_dir, "val"),
        processed_dir / splits.STATS_FILE,
        checksums,
    )
    loop.check_feasible(cfg.model, cfg.train, *data.train.x.shape)
    return data


def train(
    cfg: config.Config,
    data: TrainingData,
    out_dir: str | Path,
    history_path: str | Path,
    progress: bool = True,
    after_epoch: Callable[[int, float], None] | None = None,
) -> loop.Fit:
    """Train into the active MLflow run: params, per-epoch metrics, the weights (out_dir/model.npz,
    also an artifact), the pyfunc model and the per-epoch history CSV. `after_epoch(epoch, validation
    accuracy)` is called once an epoch is logged (a sweep's pruning: it may raise to stop)."""
    weights_path = Path(out_dir) / WEIGHTS_FILE
    mlflow.log_params(config.flatten(cfg))
    mlflow.set_tag(MLFLOW_RUN_NOTE, description(cfg))
    mlflow.set_tags(numerics.describe())  # the CPU, BLAS kernels, threads and versions behind the numbers
    for split, name, context in ((data.train, "train", "training"), (data.val, "val", "validation")):
        runs.log_dataset(
            split.x,
            split.y,
            data.checksums[f"{name}.npz"],
            data.stats_path.parent / f"{name}.npz",
            f"{cfg.data.dataset}-{name}",
            context,
        )
    epoch_metrics = runs.EpochMetrics()

    def on_epoch(stats: loop.EpochStats) -> None:
        values = dataclasses.asdict(stats)
        epoch = values.pop("epoch")
        seconds = values.pop("seconds")
        epoch_metrics.log({**{CURVES + k: v for k, v in values.items()}, "epoch_seconds": seconds}, step=epoch)
        log.info(  # with the run's name: parallel jobs' lines interleave
            "%s epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1fs",
            mlflow.active_run().info.run_name,
            epoch,
            cfg.train.epochs,
            stats.train_loss,
            stats.train_accuracy,
            stats.val_loss,
            stats.val_accuracy,
            stats.seconds,
        )
        if after_epoch is not None:
            after_epoch(epoch, stats.val_accuracy)

    try:
        fit = loop.fit(
            data.train.x,
            data.train.y,
            data.val.x,
            data.val.y,
            cfg.model,
            cfg.train,
            on_epoch=on_epoch,
            progress=progress,
        )
        weights.save(weights_path, fit.params)
        # The confidence below which mnist-predict says "not readable", chosen on the validation split.
        reading.save(weights_path.parent, reading.choose(reference.predict_proba(fit.params, data.val.x)))
        # Wall-clock seconds stay out of the versioned history (they differ on every run); MLflow has them.
        history = pd.DataFrame([dataclasses.asdict(s) for s in fit.history]).drop(columns="seconds")
        with atomic_path(history_path) as tmp:
            history.to_csv(tmp, index=False)
        kept = {
            "kept_val_accuracy": fit.kept.val_accuracy,
            "kept_epoch": fit.kept.epoch,
            "epochs_run": len(fit.history),
        }
        write_json(Path(history_path).with_name(TRAINING_METRICS_FILE), kept)
        mlflow.set_tag(WEIGHTS_TAG, sha256_file(weights_path))
        mlflow.log_artifact(str(weights_path), artifact_path="weights")
        pyfunc.log_model(weights_path, data.stats_path, data.val.x[:1])
        # The run's totals go out with the last epochs' metrics, after the model: log_model copies
        # every metric already logged at step 0 onto the model, one query per metric name.
        epoch_metrics.log({**kept, "train_seconds": sum(s.seconds for s in fit.history)}, step=0)
    except BaseException:
        # A run that failed or stopped after writing its weights (a full disk while logging them)
        # leaves none of its outputs behind, so nothing passes for a finished run's.
        outputs = (weights_path, weights_path.with_name(reading.READING_FILE), Path(history_path))
        for written in (*outputs, Path(history_path).with_name(TRAINING_METRICS_FILE)):
            written.unlink(missing_ok=True)
        raise
    finally:
        epoch_metrics.flush()  # also when training or logging fails: no epoch is lost
    return fit


def evaluate(
    params: reference.Params,
    test: splits.Split,
    reports_dir: str | Path,
    logged: dict[str, float] | None = None,
    scored: dict[str, str] | None = None,
) -> dict[str, float]:
    """Score the weights on the test split; write the reports and log them into the active MLflow
    run: the metrics whose values differ from those `logged` there already, so that scoring a run
    again adds no duplicate points. `scored` (the SHA-256 of the weights and of the test split) goes
    into the classification report, so that a later train stage can tell that these reports belong
    to the weights it wrote (earlier_test_metrics)."""
    reports_dir = Path(reports_dir)
    loss, accuracy, predicted = metrics.evaluate(params, test.x.astype(params["W1"].dtype, copy=False), test.y)
    confusion = metrics.confusion_matrix(test.y, predicted)
    classes = metrics.per_class(confusion)
    summary = {
        "test_accuracy": accuracy,
        "test_loss": loss,
        "test_macro_f1": float(np.mean([c["f1"] for c in classes.values()])),
    }
    write_json(reports_dir / METRICS_FILE, summary)
    write_json(
        reports_dir / CLASSIFICATION_FILE,
        {
            "per_class": classes,
            "confusion_matrix": confusion.tolist(),
            "confusion_axes": "rows = actual, columns = predicted",
            **({"scored": scored} if scored else {}),
        },
    )
    # One row per test image: the form `dvc plots` needs for its confusion template.
    with atomic_path(reports_dir / PREDICTIONS_FILE) as tmp:
        pd.DataFrame({"actual": test.y, "predicted": predicted}).to_csv(tmp, index=False)
    changed = {k: v for k, v in summary.items() if (logged or {}).get(k) != v}
    if changed:
        mlflow.log_metrics(changed)
    run = mlflow.active_run()
    name = run.info.run_name
    pictures = {  # drawn once, for MLflow and for the report
        "confusion_matrix": report.png(plots.confusion_heatmap(confusion, name)),
        "misclassified": report.png(plots.misclassified_grid(test.x, test.y, predicted, run=name)),
    }
    with tempfile.TemporaryDirectory() as folder:
        for picture_name, picture in pictures.items():
            (Path(folder) / f"{picture_name}.png").write_bytes(picture)
        mlflow.log_artifacts(folder, "plots")
    for file_name in (METRICS_FILE, CLASSIFICATION_FILE):
        mlflow.log_artifact(str(reports_dir / file_name), artifact_path="reports")
    with atomic_path(reports_dir / report.REPORT_FILE) as tmp:
        tmp.write_text(run_report(run.info.run_id, name, summary, reports_dir, pictures), encoding="utf-8")
    mlflow.log_artifact(str(reports_dir / report.REPORT_FILE))
    return summary


def run_report(run_id: str, name: str, summary: dict[str, float], reports_dir: Path, pictures: dict[str, bytes]) -> str:
    """The run's HTML report: its scores and parameters, learning curves, confusion matrix and
    misclassified digits. Only what the run computed goes in (no id, no time), so the pipeline's
    report is the same bytes for the same data, code and params."""
    params = MlflowClient().get_run(run_id).data.params
    history_path, kept_path = reports_dir / HISTORY_FILE, reports_dir / TRAINING_METRICS_FILE
    kept = json.loads(kept_path.read_text()) if kept_path.is_file() else {}
    scores = {**summary, **kept}
    sections = [
        ("Scores", report.key_values({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in scores.items()}))
    ]
    if history_path.is_file():
        history = pd.read_csv(history_path)
        sections.append(("Learning curves", comparison_plots.learning_curves({name: history})))
    sections += [
        ("Confusion matrix (test split)", pictures["confusion_matrix"]),
        ("Misclassified test digits", pictures["misclassified"]),
        ("Parameters", report.key_values(dict(sorted(params.items())))),
    ]
    return report.page(
        f"Run {name}",
        f"test accuracy <b>{summary['test_accuracy']:.2%}</b>, test loss {summary['test_loss']:.4f}"
        + (f"; kept epoch {kept['kept_epoch']} of {kept['epochs_run']}" if kept else ""),
        sections,
    )


def sha256_of_test_split(processed_dir: Path) -> str:
    return splits.load_stats(processed_dir)["processed_sha256"]["test.npz"]


def log_test_input(cfg: config.Config, test: splits.Split, processed_dir: Path) -> None:
    """The test split as the active run's dataset input (context "test"), beside training and validation."""
    path = processed_dir / "test.npz"
    runs.log_dataset(test.x, test.y, sha256_of_test_split(processed_dir), path, f"{cfg.data.dataset}-test", "test")


def earlier_test_metrics(reports_dir: Path, weights_sha256: str, test_sha256: str) -> dict[str, float]:
    """The test metrics in `reports_dir` if the evaluate stage scored exactly these weights on exactly
    this test split there, else {}. When retrained weights come out as the lock records them (a fresh
    clone, a recovery), DVC skips evaluate; the train stage's run then takes these."""
    try:
        scored = json.loads((reports_dir / CLASSIFICATION_FILE).read_text()).get("scored")
        summary = json.loads((reports_dir / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if scored != {"weights_sha256": weights_sha256, "test_sha256": test_sha256}:
        return {}
    return {k: float(v) for k, v in summary.items()}


def log_link(experiment_id: str, run_id: str) -> None:
    """The run's curves in the MLflow UI, on a line of their own, and how to start the UI if none answers."""
    log.info("the run in MLflow: %s", ui.run_link(experiment_id, run_id))
    hint = ui.ui_hint()
    if hint:
        log.info(hint)


def run_that_wrote(experiment_id: str, weights_path: Path):
    """The newest pipeline run that wrote these weights (found by their SHA-256), or None."""
    found = MlflowClient().search_runs(
        [experiment_id],
        f"tags.`{WEIGHTS_TAG}` = '{sha256_file(weights_path)}' and tags.entry_point = '{PIPELINE_ENTRY_POINT}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return found[0] if found else None


def train_run(cfg: config.Config, processed_dir: Path, models_dir: Path, reports_dir: Path) -> str:
    """The train stage: one new MLflow run in the project store; returns its id. Where the reports
    already hold the test scores of the very weights it wrote, the run gets them too."""
    data = load_training_data(cfg, processed_dir)
    root = store.repo_root()
    experiment_id = store.setup(cfg.tracking.experiment, root)
    for folder in (models_dir, reports_dir):  # not after 30 epochs
        require_writable(folder, "the stage's outputs", "run it where you can write (a checkout of your own)")
    tags = runs.run_tags(root, data.checksums, PIPELINE_ENTRY_POINT)
    with (
        liveness.start_run(experiment_id=experiment_id, run_name=run_name(cfg), tags=tags) as run,
        runs.ended_on_failure(),
    ):
        fit = train(cfg, data, models_dir, reports_dir / HISTORY_FILE)
        earlier = earlier_test_metrics(
            reports_dir, sha256_file(models_dir / WEIGHTS_FILE), sha256_of_test_split(processed_dir)
        )
        if earlier:
            mlflow.log_metrics(earlier)
            mlflow.set_tag("test_metrics.from", f"{reports_dir / METRICS_FILE}: the same weights, scored before")
    log.info(
        "run %s: validation accuracy %.2f%% (epoch %d)", run.info.run_name, 100 * fit.kept.val_accuracy, fit.kept.epoch
    )
    if earlier:  # DVC skips evaluate (its outputs are these weights' already): the link is printed here
        log_link(experiment_id, run.info.run_id)
    return run.info.run_id


def evaluate_run(cfg: config.Config, processed_dir: Path, models_dir: Path, reports_dir: Path) -> tuple[str, dict]:
    """The evaluate stage: score models/model.npz in the MLflow run that wrote it; returns (run id, metrics)."""
    numerics.require(cfg.train.numerics)
    weights_path = models_dir / WEIGHTS_FILE
    params = weights.load(weights_path)
    test = splits.load(processed_dir, "test")
    experiment_id = store.setup(cfg.tracking.experiment)
    found = run_that_wrote(experiment_id, weights_path)
    if found is None:
        raise DataError(
            f"no run in MLflow experiment {cfg.tracking.experiment!r} at {mlflow.get_tracking_uri()} "
            f"wrote {weights_path}; train into this store again with `dvc repro --force train`"
        )
    scored = {"weights_sha256": sha256_file(weights_path), "test_sha256": sha256_of_test_split(processed_dir)}
    with liveness.start_run(run_id=found.info.run_id) as run, runs.ended_on_failure():
        log_test_input(cfg, test, processed_dir)
        summary = evaluate(params, test, reports_dir, found.data.metrics, scored)
    log.info(
        "run %s: test accuracy %.2f%%, test loss %.4f",
        run.info.run_name,
        100 * summary["test_accuracy"],
        summary["test_loss"],
    )
    log_link(experiment_id, run.info.run_id)
    return run.info.run_id, summary


def show_pipeline_run(experiment: str, models_dir: Path, reports_dir: Path) -> None:
    """Print where to look at the pipeline's run (`make run` ends with this, after DVC's own hints):
    its report and its curves in the MLflow UI."""
    weights_path = models_dir / WEIGHTS_FILE
    found = mlflow.get_experiment_by_name(experiment)
    run = run_that_wrote(found.experiment_id, weights_path) if found and weights_path.is_file() else None
    if run is None:
        raise DataError(f"no run in {mlflow.get_tracking_uri()} wrote {weights_path}; run the pipeline (make run)")
    if (reports_dir / report.REPORT_FILE).is_file():
        log.info("the run's report: %s", reports_dir / report.REPORT_FILE)
    log_link(found.experiment_id, run.info.run_id)
