"""Benchmark: a 3x3x3 Hydra grid (27 jobs, 1 epoch each, real MNIST) with the joblib launcher on
2 workers against the same grid run sequentially by the basic launcher, in the same run.

    dvc repro normalize   # the sweep trains on data/processed/
    python benchmarks/sweep_parallel.py [--out benchmarks/results/sweep_parallel.json]

Both sweeps log to a throwaway SQLite store, so the project's mlflow.db is untouched. Prints JSON
with each side's wall-clock seconds and their ratio (parallel / sequential; lower is better).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = ["train.lr=0.01,0.1,0.5", "train.batch_size=32,64,128", "model.hidden_size=10,64,256", "train.epochs=1"]


def timed_sweep(extra: list[str], store: Path, sweep_dir: Path) -> float:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    cmd = [sys.executable, str(REPO / "pipelines" / "sweep.py"), "-m", f"hydra.sweep.dir={sweep_dir}", *GRID, *extra]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "sweep_parallel.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sequential = timed_sweep([], tmp / "seq.db", tmp / "seq")
        parallel = timed_sweep(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp / "par.db", tmp / "par")
    result = {
        "benchmark": "27-job grid, 1 epoch each, real MNIST",
        "jobs": 27,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "sequential_s": round(sequential, 2),
        "joblib_2_workers_s": round(parallel, 2),
        "ratio_parallel_over_sequential": round(parallel / sequential, 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
