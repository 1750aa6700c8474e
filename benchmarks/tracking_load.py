"""Load test of a tracking server: N processes log a full run each at once (per-epoch metrics,
the weights, the servable model), then every run, metric step and artifact is checked; the same
load against a SQLite store in the same run gives the comparison.

    make cluster-up && source .cluster.env       # or any tracking server in MLFLOW_TRACKING_URI
    python benchmarks/tracking_load.py [--processes 16] [--epochs 30] [--out benchmarks/results/tracking_load.json]

Needs models/model.npz and data/processed/stats.json (make run). Exits 1 if anything did not arrive.
Two phases, each started by every process at once (a barrier, after all have imported MLflow) and
timed from that moment to the last process's end: the metrics (metric values written per second, all
processes together; each epoch's metrics go in one request per epoch, where the pipeline batches
harder, at most one every 10 s, so this is the server's worst case for a run of this length), then
the artifacts (the weights and the servable model: MB uploaded per second, and files per second).
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


def log_one_run(uri: str, index: int, epochs: int, ready, weights: Path, stats: Path) -> tuple:
    """One process's run: its metrics once every process has imported MLflow (`ready`, a barrier of
    all of them), its artifacts once every process has logged its metrics; returns its run id and
    when each phase started and ended here."""
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
    try:
        with mlflow.start_run(run_name=f"load-{index}") as run:
            for epoch in range(1, epochs + 1):
                mlflow.log_metrics({name: 1.0 / (epoch + i) for i, name in enumerate(METRICS)}, step=epoch)
            metrics_ended = time.time()
            ready.wait()
            uploads_started = time.time()
            mlflow.log_artifact(str(weights), artifact_path="weights")
            pyfunc.log_model(weights, stats, example)
    except BaseException:
        ready.abort()  # the others, waiting for this one at the barrier, fail too instead of waiting for good
        raise
    return run.info.run_id, started, metrics_ended, uploads_started, time.time()


def artifact_files(client, run_id: str, path: str | None = None) -> list:
    """Every artifact file of the run (MLflow's FileInfo, with its size), its servable model's
    included (MLflow 3 keeps a model apart from the run's own artifacts, listed only by its path)."""
    from mnist_np.serving.pyfunc import MODEL_NAME

    found = []
    for info in client.list_artifacts(run_id, path):
        found += artifact_files(client, run_id, info.path) if info.is_dir else [info]
    if path is None and not any(f.path.startswith(f"{MODEL_NAME}/") for f in found):
        found += artifact_files(client, run_id, MODEL_NAME)
    return found


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
        run_ids, started, metrics_ended, uploads_started, ended = zip(*pending.get(timeout=1800), strict=True)
    metric_seconds, upload_seconds = max(metrics_ended) - min(started), max(ended) - min(uploads_started)
    problems = check(uri, list(run_ids), epochs)
    values = processes * epochs * len(METRICS)
    files = [f for run_id in run_ids for f in artifact_files(client, run_id)]
    megabytes = sum(f.file_size or 0 for f in files) / 1e6
    return {
        "runs": len(run_ids),
        "metric_values": values,
        "metric_seconds": round(metric_seconds, 2),
        "metric_writes_per_s": round(values / metric_seconds, 1),
        "artifact_files": len(files),
        "artifact_mb": round(megabytes, 2),
        "artifact_seconds": round(upload_seconds, 2),
        "artifact_mb_per_s": round(megabytes / upload_seconds, 2),
        "artifact_files_per_s": round(len(files) / upload_seconds, 1),
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
        "server_over_sqlite_metric_writes": round(server["metric_writes_per_s"] / sqlite["metric_writes_per_s"], 3),
        "server_over_sqlite_artifact_mb": round(server["artifact_mb_per_s"] / sqlite["artifact_mb_per_s"], 3),
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
