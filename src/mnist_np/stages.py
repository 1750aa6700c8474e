"""The work of the train and evaluate stages, logged to the active MLflow run.

The DVC entry points in pipelines/ open (or resume) the run and call these; other entry points
(sweeps) call the same functions, so every run logs the same things in the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from . import data, metrics, network, plots, serving, tracking, training, weights
from .config import Config, flatten
from .errors import DataError
from .files import atomic_path, write_json

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.npz"
HISTORY_FILE = "training.csv"
METRICS_FILE = "metrics.json"
CLASSIFICATION_FILE = "classification.json"
PREDICTIONS_FILE = "predictions.csv"
RUN_FILE = "run.json"  # the MLflow run the train stage opened, for evaluate to resume


def run_name(cfg: Config) -> str:
    """Short MLflow run name with the usual sweep axes, e.g. h10-lr0.1-b32."""
    return f"h{cfg.model.hidden_size}-lr{cfg.train.lr:g}-b{cfg.train.batch_size}"


def data_checksums(processed_dir: Path) -> dict[str, str]:
    """SHA-256 of the raw downloads and of the processed training data, as the normalize stage
    recorded them (hashing the ~190 MB here cost 5% of a default run, on every run)."""
    stats = data.load_stats(processed_dir)
    if "processed_sha256" not in stats:
        raise DataError(f"{processed_dir / data.STATS_FILE} comes from an older normalize stage without "
                        "processed_sha256; run it again (dvc repro normalize)")
    processed = stats["processed_sha256"]
    return {**stats["raw_sha256"], **{name: processed[name] for name in ("train.npz", "val.npz")}}


def train(cfg: Config, processed_dir: str | Path, weights_path: str | Path, history_path: str | Path,
          progress: bool = True) -> tuple[network.Params, list[training.EpochStats]]:
    """Train on the processed data, logging params, per-epoch metrics and the weights to MLflow."""
    processed_dir = Path(processed_dir)
    train_split, val_split = data.load(processed_dir, "train"), data.load(processed_dir, "val")
    mlflow.log_params(flatten(cfg))

    epoch_metrics = tracking.EpochMetrics()

    def on_epoch(stats: training.EpochStats) -> None:
        values = dataclasses.asdict(stats)
        epoch = values.pop("epoch")
        epoch_metrics.log({("epoch_seconds" if k == "seconds" else k): v for k, v in values.items()}, step=epoch)
        log.info("epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1fs", epoch, cfg.train.epochs,
                 stats.train_loss, stats.train_accuracy, stats.val_loss, stats.val_accuracy, stats.seconds)

    try:
        params, history = training.fit(train_split.x, train_split.y, val_split.x, val_split.y,
                                       cfg.model, cfg.train, on_epoch=on_epoch, progress=progress)
        weights.save(weights_path, params)
        frame = pd.DataFrame([dataclasses.asdict(s) for s in history])
        with atomic_path(history_path) as tmp:
            frame.to_csv(tmp, index=False)
        mlflow.log_artifact(str(weights_path), artifact_path="weights")
        serving.log_model(Path(weights_path), processed_dir / data.STATS_FILE, val_split.x[:1])
        # The run's totals go out with the last epochs' metrics, in one write after the model:
        # log_model copies every metric already logged at its step (0) onto the model, one query
        # per metric name (5% of MLflow's time in a default run, benchmarks/speed.py).
        epoch_metrics.log({"train_seconds": sum(s.seconds for s in history), "epochs_run": len(history)}, step=0)
    finally:
        epoch_metrics.flush()  # also when training or logging fails: no epoch is lost
    # No learning-curve figure and no copy of the history CSV here: the per-epoch metrics are in
    # the run already, and the MLflow UI charts them itself (several runs on one chart). The two
    # cost 4% of a default run (benchmarks/speed.py).
    return params, history


def evaluate(params: network.Params, processed_dir: str | Path, reports_dir: str | Path) -> dict[str, float]:
    """Score the weights on the test split; write the reports and log them to MLflow."""
    reports_dir = Path(reports_dir)
    test = data.load(Path(processed_dir), "test")
    loss, accuracy, pred = network.loss_and_accuracy(params, test.x.astype(params["W1"].dtype, copy=False), test.y)
    confusion = metrics.confusion_matrix(test.y, pred)
    classes = metrics.per_class(confusion)
    summary = {"test_accuracy": accuracy, "test_loss": loss,
               "test_macro_f1": float(np.mean([c["f1"] for c in classes.values()]))}
    write_json(reports_dir / METRICS_FILE, summary)
    write_json(reports_dir / CLASSIFICATION_FILE, {"per_class": classes, "confusion_matrix": confusion.tolist(),
                                                   "confusion_axes": "rows = actual, columns = predicted"})
    # One row per test image: the form `dvc plots` needs for its confusion template.
    with atomic_path(reports_dir / PREDICTIONS_FILE) as tmp:
        pd.DataFrame({"actual": test.y, "predicted": pred}).to_csv(tmp, index=False)
    mlflow.log_metrics(summary)
    mlflow.log_figure(plots.confusion_heatmap(confusion), "plots/confusion_matrix.png")
    mlflow.log_figure(plots.misclassified_grid(test.x, test.y, pred), "plots/misclassified.png")
    for name in (METRICS_FILE, CLASSIFICATION_FILE):
        mlflow.log_artifact(str(reports_dir / name), artifact_path="reports")
    return summary
