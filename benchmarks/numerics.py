"""Benchmark: what the portable numerics cost against the native ones, on the machine at hand.

    dvc repro normalize                      # needs data/processed/
    python benchmarks/numerics.py [--repeats 5] [--epochs 3] [--out benchmarks/results/numerics.json]

Each run trains in a process of its own (the numerics are fixed when NumPy loads), the default
network's loop (plain SGD, He init) at hidden 10 / batch 32 and hidden 1024 / batch 128 on the real
training split; a run's time is its median epoch of gradient steps. The two modes take turns, and
the ratio reported is the median over `repeats` of the paired ratios portable / native. A third
side, native with OpenBLAS's Haswell kernels forced, splits the cost: the kernel family alone
(haswell / native) against the threads and NumPy's dispatch (portable / haswell). The JSON names the
CPU and the kernels and threads each side used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = [(10, 32), (1024, 128)]  # (hidden size, batch size)
SIDES = {  # the environment each side's process starts with
    "portable": {"MNIST_NP_NUMERICS": "portable"},
    "native": {"MNIST_NP_NUMERICS": "native"},
    "haswell": {"MNIST_NP_NUMERICS": "native", "OPENBLAS_CORETYPE": "Haswell"},
}


def one_run(hidden: int, batch: int, epochs: int) -> dict:
    """In the child: train and report the median epoch and what computed it."""
    import dataclasses

    from mnist_np import config, numerics  # first: fixes the numerics before NumPy loads
    from mnist_np.data import splits
    from mnist_np.training import loop

    cfg = config.load_params(REPO / "params.yaml")
    mode = os.environ[numerics.MODE_ENV]
    model = dataclasses.replace(cfg.model, hidden_size=hidden, init="he")
    train = dataclasses.replace(cfg.train, batch_size=batch, epochs=epochs, lr=0.05, numerics=mode)
    data = splits.load(REPO / "data" / "processed", "train")
    fit = loop.fit(data.x, data.y, data.x[:10], data.y[:10], model, train, progress=False)
    tags = numerics.describe()
    return {"seconds": statistics.median(s.seconds for s in fit.history), **tags}


def run_side(side: str, hidden: int, batch: int, epochs: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"} | SIDES[side]
    cmd = [sys.executable, __file__, "--child", f"{hidden},{batch},{epochs}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_seconds(runs: list[dict]) -> float:
    return statistics.median(r["seconds"] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (a run counts its median epoch)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "numerics.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(*map(int, args.child.split(",")))))
        return
    result = {"repeats": args.repeats, "epochs_per_run": args.epochs, "cases": []}
    for hidden, batch in CASES:
        runs: dict[str, list[dict]] = {side: [] for side in SIDES}
        for _ in range(args.repeats):
            for side in runs:
                runs[side].append(run_side(side, hidden, batch, args.epochs))
        case = {"hidden": hidden, "batch": batch}
        case |= {f"{side}_s_per_epoch": round(median_seconds(rs), 4) for side, rs in runs.items()}
        for over, under in (("portable", "native"), ("haswell", "native"), ("portable", "haswell")):
            ratios = [a["seconds"] / b["seconds"] for a, b in zip(runs[over], runs[under])]
            case[f"ratio_{over}_over_{under}"] = round(statistics.median(ratios), 3)
            case[f"ratio_{over}_over_{under}_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
        case |= {f"{side}_blas": rs[0]["numerics.blas.scipy"] for side, rs in runs.items()}
        case |= {f"{side}_numpy_simd": rs[0]["numerics.numpy_simd"] for side, rs in runs.items()}
        result["cpu"] = runs["native"][0]["numerics.cpu"]
        result["cases"].append(case)
        print(json.dumps(case), file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
