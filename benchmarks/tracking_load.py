"""Load test of a tracking server: N processes log a full run each at once (per-epoch metrics,
the weights, the servable model), then every run, metric step and artifact is checked; the same
load against a SQLite store in the same run gives the comparison.

    make cluster-up && source .cluster.env       # or any tracking server in MLFLOW_TRACKING_URI
    python benchmarks/tracking_load.py [--processes 16] [--epochs 30] [--out benchmarks/results/tracking_load.json]

Needs models/model.npz and data/processed/stats.json (make run). Exits 1 if anything did not arrive.
Throughput counts metric values written per second of the logging phase, all processes together.
Each epoch's metrics go in one request per epoch (the pipeline batches harder: at most one every
10 s), so this is the server's worst case for a run of this length.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METRICS = (
    "epoch/train_loss",
    "epoch/train_accuracy",
    "epoch/val_loss",
    "epoch/val_accuracy",
    "epoch_seconds",
)  # as a run logs them
EXPERIMENT = "tracking-load"


def log_one_run(uri: str, index: int, epochs: int, ready, weights: Path, stats: Path) -> tuple[str, float, float]:
    """One process's run, started the moment every process has imported MLflow (`ready`, a barrier
    of all of them); returns its run id and when its logging started and ended."""
    import mlflow
    import numpy as np

    from mnist_np import cli
    from mnist_np.serving import pyfunc

    cli.quiet_mlflow()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(EXPERIMENT)  # created by load() before this process started
    example = np.zeros((1, 784), np.float32)
    ready.wait()
    started = time.time()
    with mlflow.start_run(run_name=f"load-{index}") as run:
        for epoch in range(1, epochs + 1):
            mlflow.log_metrics({name: 1.0 / (epoch + i) for i, name in enumerate(METRICS)}, step=epoch)
        mlflow.log_artifact(str(weights), artifact_path="weights")
        pyfunc.log_model(weights, stats, example)
    return run.info.run_id, started, time.time()


def check(uri: str, run_ids: list[str], epochs: int) -> list[str]:
    """What did not arrive: missing runs, metric steps or artifacts."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from mnist_np.serving.pyfunc import MODEL_NAME

    mlflow.set_tracking_uri(uri)  # a run's model is found through the global tracking URI
    client, problems = MlflowClient(uri), []
    for run_id in run_ids:
        run = client.get_run(run_id)
        if run.info.status != "FINISHED":
            problems.append(f"{run_id}: {run.info.status}")
        for name in METRICS:
            steps = sorted(m.step for m in client.get_metric_history(run_id, name))
            if steps != list(range(1, epochs + 1)):
                problems.append(f"{run_id}: {name} has steps {steps}")
        artifacts = {a.path for a in client.list_artifacts(run_id, "weights")}
        if artifacts != {"weights/model.npz"} or not client.list_artifacts(run_id, MODEL_NAME):
            problems.append(f"{run_id}: artifacts {artifacts}")
    return problems


def load(uri: str, processes: int, epochs: int, files: tuple[Path, Path], artifacts: Path | None = None) -> dict:
    """`processes` runs logged at once into `uri` (a SQLite store keeps its artifacts in `artifacts`)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)  # the store's schema and the experiment exist before the processes start
    if client.get_experiment_by_name(EXPERIMENT) is None:
        client.create_experiment(EXPERIMENT, artifact_location=artifacts.as_uri() if artifacts else None)
    spawn = multiprocessing.get_context("spawn")
    with spawn.Manager() as manager, spawn.Pool(processes) as pool:
        ready = manager.Barrier(processes)  # every process imports MLflow first, then all start together
        pending = pool.starmap_async(log_one_run, [(uri, i, epochs, ready, *files) for i in range(processes)])
        run_ids, started, ended = zip(*pending.get(timeout=1800), strict=True)
    seconds = max(ended) - min(started)
    problems = check(uri, list(run_ids), epochs)
    values = processes * epochs * len(METRICS)
    return {
        "runs": len(run_ids),
        "metric_values": values,
        "seconds": round(seconds, 2),
        "metric_writes_per_s": round(values / seconds, 1),
        "complete": not problems,
        "problems": problems[:20],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--server", default=os.environ.get("MLFLOW_TRACKING_URI"), help="(default: $MLFLOW_TRACKING_URI)"
    )
    parser.add_argument("--processes", type=int, default=16, help="runs logged at once (default: 16)")
    parser.add_argument("--epochs", type=int, default=30, help="metric steps per run (default: 30)")
    parser.add_argument("--out", type=Path, help="write the JSON result here too")
    parser.add_argument(
        "--weights", type=Path, default=REPO / "models" / "model.npz", help="(default: models/model.npz)"
    )
    parser.add_argument(
        "--stats",
        type=Path,
        default=REPO / "data" / "processed" / "stats.json",
        help="(default: data/processed/stats.json)",
    )
    args = parser.parse_args()
    if not (args.server or "").startswith("http"):
        sys.exit("error: no tracking server: make cluster-up && source .cluster.env, or pass --server http://...")
    files = (args.weights, args.stats)
    for needed in files:
        if not needed.is_file():
            sys.exit(f"error: {needed} not found; run `make run` first")
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = load(f"sqlite:///{Path(tmp) / 'load.db'}", args.processes, args.epochs, files, Path(tmp) / "artifacts")
    server = load(args.server, args.processes, args.epochs, files)
    result = {
        "machine": platform.processor() or platform.machine(),
        "cpus": len(os.sched_getaffinity(0)),
        "processes": args.processes,
        "epochs": args.epochs,
        "server": server,
        "sqlite": sqlite,
        "server_over_sqlite_throughput": round(server["metric_writes_per_s"] / sqlite["metric_writes_per_s"], 3),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if not (server["complete"] and sqlite["complete"]):
        sys.exit("error: some runs, metric steps or artifacts did not arrive (see problems above)")


if __name__ == "__main__":
    main()
