"""Benchmark: this network against PyTorch and scikit-learn on the CPU, the cost of training-time
distortions, plus memory and MLflow overhead, in one run.

    dvc repro normalize                                    # needs data/processed/
    pip install torch==2.13.0 scikit-learn==1.9.1          # benchmark dependencies, never the product's
    python benchmarks/speed.py [--repeats 7] [--epochs 3] [--out benchmarks/results/speed.json]

All sides train the same architecture (784 -> H ReLU -> 10 softmax, cross-entropy, plain
mini-batch SGD) on the real training split, in float32, with the same number of BLAS/intra-op
threads, the same batch size and epochs, shuffling each epoch: ours, PyTorch (torch.nn), and
scikit-learn's MLPClassifier (solver="sgd", one partial_fit per epoch). A run's time is its
median epoch of the gradient-step loop alone (no validation pass); the sides take turns run by
run, and each ratio reported is the median over `repeats` of the paired ratios. Ours runs with
train.numerics=native, as the peers run; benchmarks/numerics.py measures the portable path's cost.
The same pairing measures an epoch with train.augment on against a plain one (hidden 800).
Also reported: the machine's float32 matrix-multiply throughput (GFLOP/s) and the fraction of it
that training reaches; the peak resident memory of the real train stage at hidden 1024; and
the share of a default train stage's time that MLflow logging costs (see mlflow_overhead).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from scipy.linalg import blas
from threadpoolctl import threadpool_info, threadpool_limits

from mnist_np import config
from mnist_np.data import splits
from mnist_np.training import loop

REPO = Path(__file__).resolve().parents[1]

CASES = [(10, 32), (1024, 128)]  # (hidden size, batch size)
TARGETS = {  # the largest acceptable ratio of our epoch time to each peer's
    "torch": {(10, 32): 0.15, (1024, 128): 0.9},
    "sklearn": {(10, 32): 0.1, (1024, 128): 0.1},
}
AUGMENT_CASE, AUGMENT_TARGET = (800, 128), 2.0  # an epoch with distortions against a plain one


def ours_epoch_seconds(x, y, hidden, batch, epochs, seed, augment: bool = False) -> list[float]:
    cfg = config.load_params(REPO / "params.yaml")  # the defaults, with the benchmark's changes
    model = dataclasses.replace(cfg.model, hidden_size=hidden, init="he")
    train = dataclasses.replace(
        cfg.train,
        lr=0.05,
        batch_size=batch,
        epochs=epochs,
        seed=seed,
        lr_decay=1.0,
        momentum=0.0,
        weight_decay=0.0,
        early_stopping=0,
        dtype="float32",
        augment=dataclasses.replace(cfg.train.augment, enabled=augment),
        numerics="native",  # as the peers: the CPU's own kernels, every thread (portable: benchmarks/numerics.py)
    )
    fit = loop.fit(x, y, x[:10], y[:10], model, train, progress=False)
    return [s.seconds for s in fit.history]


def torch_epoch_seconds(x, y, hidden, batch, epochs, seed) -> list[float]:
    import torch

    X, Y = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(784, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(X))
        xs, ys = X[order], Y[order]
        for i in range(0, len(X), batch):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xs[i : i + batch]), ys[i : i + batch])
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def sklearn_epoch_seconds(x, y, hidden, batch, epochs, seed) -> list[float]:
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(
        hidden_layer_sizes=(hidden,),
        activation="relu",
        solver="sgd",
        batch_size=batch,
        learning_rate_init=0.05,
        momentum=0.0,
        nesterovs_momentum=False,
        alpha=0.0,
        shuffle=True,
        random_state=seed,
    )
    classes, times = np.arange(10), []
    for _ in range(epochs):
        start = time.perf_counter()
        model.partial_fit(x, y, classes=classes)  # one pass over the shuffled data in mini-batches
        times.append(time.perf_counter() - start)
    assert model.coefs_[0].dtype == np.float32, "scikit-learn trained in float64"
    return times


PEERS = {"torch": torch_epoch_seconds, "sklearn": sklearn_epoch_seconds}


def compare(sides: dict, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per epoch of each side (name -> function of the seed giving epoch times),
    and the median ratio of the first side's time to each other's, over `repeats` rounds.

    The sides take turns, one run each per round, so a slow spell of this shared machine
    falls on every side of a round instead of on one side's whole sample.
    """
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for seed in range(repeats):
        for name, epoch_seconds in sides.items():
            seconds[name].append(statistics.median(epoch_seconds(seed)))
    first, *others = sides
    ratios = {o: statistics.median(a / b for a, b in zip(seconds[first], seconds[o])) for o in others}
    return {name: statistics.median(s) for name, s in seconds.items()}, ratios


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Float32 GEMM throughput (n x n) of the BLAS library the network calls (scipy.linalg.blas)."""
    gemm, a = blas.get_blas_funcs("gemm", dtype=np.float32), np.ones((n, n), np.float32, order="F")
    gemm(1.0, a, a)
    best = min(_timed(lambda: gemm(1.0, a, a)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def training_gflop_per_epoch(n: int, hidden: int) -> float:
    """Matrix-multiply work of one epoch: forward X W1, A1 W2; backward A1^T E2, E2 W2^T, X^T E1."""
    return 2 * n * (784 * hidden * 2 + hidden * 10 * 3) / 1e9


def train_stage_peak_rss_mb(hidden: int, tracking_uri: str) -> float:
    """Run the real train stage at this hidden size for one epoch; its peak resident memory in MB.

    Read from the child's VmHWM, polled until it exits: getrusage would also count the parent's
    memory that the child shares between fork and exec.
    """
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["hidden_size"] = hidden
    params["train"].update(epochs=1, batch_size=128)
    peak_kb = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(yaml.safe_dump(params))
        child = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "pipelines" / "train.py"),
                "--params",
                str(path),
                "--models",
                str(Path(tmp) / "models"),
                "--reports",
                str(Path(tmp) / "reports"),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        )
        status = Path(f"/proc/{child.pid}/status")
        while child.poll() is None:
            try:
                line = next(row for row in status.read_text().splitlines() if row.startswith("VmHWM:"))
                peak_kb = max(peak_kb, int(line.split()[1]))
            except (OSError, StopIteration):
                pass
            time.sleep(0.01)
        if child.returncode != 0:
            raise RuntimeError(f"train stage exited {child.returncode}")
    return peak_kb / 1024


@contextlib.contextmanager
def timed_calls(targets: list[tuple[object, str]]):
    """Wrap each (owner, attribute) callable with a timer; yields a list that collects seconds.

    Only the outermost call counts, so MLflow calling itself is not counted twice.
    """
    spent, depth, originals = [0.0], [0], [(owner, name, getattr(owner, name)) for owner, name in targets]

    def wrap(fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            depth[0] += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent[0] += time.perf_counter() - start

        return timed

    for owner, name, fn in originals:
        setattr(owner, name, wrap(fn))
    try:
        yield spent
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)


def mlflow_overhead(tracking_uri: str, repeats: int) -> dict:
    """The share of a default train stage's time spent in MLflow calls, median over `repeats` runs.

    Every MLflow call the stage makes (and the git calls and data checksums for the run's tags,
    as pipelines/train.py gathers them) is timed directly;
    the fraction is that time over the rest of the stage. A difference of wall times with and
    without MLflow was tried first and abandoned: on this shared VM it varied by +-15% between
    runs, more than the effect measured. Reported beside it, because a DVC stage is a fresh
    process: the one-off cost of `import mlflow`, and the first run's extra time in MLflow calls
    (lazy imports inside MLflow), neither of which grows with training.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from mnist_np.experiments import stages
    from mnist_np.tracking import runs, store

    cfg = config.load_params(REPO / "params.yaml")
    # This process computes natively (NumPy loads before mnist_np, as for the peers), so the default
    # stage is timed with native numerics too: the same MLflow calls, a shorter epoch than portable's.
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, numerics="native"))
    processed = REPO / "data" / "processed"
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    experiment = store.setup("benchmark")
    calls = [
        (mlflow, "start_run"),
        (mlflow, "end_run"),
        (mlflow, "log_params"),
        (mlflow, "log_metrics"),
        (mlflow, "log_artifact"),
        (mlflow.pyfunc, "log_model"),
        (MlflowClient, "log_batch"),
        (runs, "run_tags"),
        (stages, "data_checksums"),
    ]
    spent_s, fractions = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp, timed_calls(calls) as spent:
            start = time.perf_counter()
            tags = runs.run_tags(REPO, stages.data_checksums(processed), "benchmark")
            mlflow.start_run(experiment_id=experiment, tags=tags)
            data = stages.load_training_data(cfg, processed)
            stages.train(cfg, data, Path(tmp), Path(tmp) / "training.csv", progress=False)
            mlflow.end_run()
            total = time.perf_counter() - start
        spent_s.append(spent[0])
        fractions.append(spent[0] / (total - spent[0]))
    imported = subprocess.run(
        [sys.executable, "-c", "import time; t = time.perf_counter(); import mlflow; print(time.perf_counter() - t)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        "config": "default (params.yaml)",
        "repeats": repeats,
        "target_fraction": 0.05,
        "fraction": round(statistics.median(fractions), 4),
        "mlflow_calls_s": round(statistics.median(spent_s), 3),
        "first_run_extra_s": round(spent_s[0] - statistics.median(spent_s), 3),
        "import_mlflow_s": round(float(imported.stdout), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (a run counts its median epoch)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speed.json")
    args = parser.parse_args()
    import sklearn
    import torch

    torch.set_num_threads(args.threads)
    train = splits.load(REPO / "data" / "processed", "train")
    result = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "blas": [f"{i['internal_api']} {i.get('version')} ({i.get('architecture')})" for i in threadpool_info()],
        "repeats": args.repeats,
        "epochs_per_run": args.epochs,
        "cases": [],
    }
    with threadpool_limits(limits=args.threads):
        peak = matmul_gflops()
        result["matmul_float32_gflops"] = round(peak, 1)
        for hidden, batch in CASES:
            shape = (train.x, train.y, hidden, batch, args.epochs)
            sides = {name: functools.partial(fn, *shape) for name, fn in {"numpy": ours_epoch_seconds, **PEERS}.items()}
            seconds, ratios = compare(sides, args.repeats)
            case = {"hidden": hidden, "batch": batch}
            case.update({f"{name}_s_per_epoch": round(s, 3) for name, s in seconds.items()})
            for peer, ratio in ratios.items():
                case[f"ratio_numpy_over_{peer}"] = round(ratio, 3)
                case[f"target_ratio_{peer}"] = TARGETS[peer][(hidden, batch)]
            fraction = training_gflop_per_epoch(len(train.x), hidden) / seconds["numpy"] / peak
            case["numpy_fraction_of_matmul_peak"] = round(fraction, 3)
            result["cases"].append(case)
            print(json.dumps(case), file=sys.stderr)
        hidden, batch = AUGMENT_CASE
        shape = (train.x, train.y, hidden, batch, args.epochs)
        sides = {
            "augmented": functools.partial(ours_epoch_seconds, *shape, augment=True),
            "plain": functools.partial(ours_epoch_seconds, *shape),
        }
        seconds, ratios = compare(sides, args.repeats)
        result["augment"] = {
            "hidden": hidden,
            "batch": batch,
            "plain_s_per_epoch": round(seconds["plain"], 3),
            "augmented_s_per_epoch": round(seconds["augmented"], 3),
            "ratio_augmented_over_plain": round(ratios["plain"], 3),
            "target_ratio": AUGMENT_TARGET,
        }
        print(json.dumps(result["augment"]), file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/bench.db"
        result["train_stage_peak_rss_mb_hidden_1024"] = round(train_stage_peak_rss_mb(1024, uri), 1)
        result["mlflow_overhead"] = mlflow_overhead(uri, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
