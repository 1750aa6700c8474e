"""Benchmark: what sending a run's per-epoch metrics costs, to choose how often they go out.

    dvc repro normalize                      # needs data/processed/
    python benchmarks/metric_batches.py [--repeats 5] [--out benchmarks/results/metric_batches.json]

A process killed outright (kill -9, the out-of-memory killer) loses the epochs not yet sent, so
they should go out often; each batch is one write to the store. In the same process this measures
one default epoch (hidden 10, batch 32, on the real training split) and one batch of an epoch's
metrics (tracking/runs.py: EpochMetrics) written to a fresh SQLite store, each the median of
`repeats` runs, and reports the batch's cost as a share of an epoch (a batch every epoch) and of
EpochMetrics' interval (a batch every interval).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BATCHES_PER_RUN = 40


def epoch_seconds(repeats: int) -> float:
    from mnist_np import config
    from mnist_np.data import splits
    from mnist_np.training import loop

    cfg = config.load_params(REPO / "params.yaml")
    train = dataclasses.replace(cfg.train, epochs=repeats, early_stopping=0)
    data = splits.load(REPO / "data" / "processed", "train")
    fit = loop.fit(data.x, data.y, data.x[:10], data.y[:10], cfg.model, train, progress=False)
    return statistics.median(s.seconds for s in fit.history)


def batch_seconds(repeats: int) -> float:
    """The median over `repeats` fresh stores of each store's median batch write."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from mnist_np.tracking import runs

    keys = ("epoch/train_loss", "epoch/train_accuracy", "epoch/val_loss", "epoch/val_accuracy", "epoch_seconds")
    medians = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
            client = MlflowClient()
            with mlflow.start_run(experiment_id=client.create_experiment("bench")):
                metrics, times = runs.EpochMetrics(interval_s=float("inf")), []
                for step in range(1, BATCHES_PER_RUN + 1):
                    metrics.log(dict.fromkeys(keys, 0.5), step=step)
                    start = time.perf_counter()
                    metrics.flush()
                    times.append(time.perf_counter() - start)
            medians.append(statistics.median(times))
    return statistics.median(medians)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "metric_batches.json"))
    args = parser.parse_args()
    from mnist_np import numerics
    from mnist_np.tracking import runs

    epoch, batch = epoch_seconds(args.repeats), batch_seconds(args.repeats)
    interval = runs.EpochMetrics().interval_s
    result = {
        "cpu": numerics.describe()["numerics.cpu"],
        "repeats": args.repeats,
        "default_epoch_s": round(epoch, 4),
        "sqlite_batch_s": round(batch, 4),
        "batch_share_of_an_epoch": round(batch / epoch, 4),
        "interval_s": interval,
        "batch_share_at_interval": round(batch / interval, 4),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
