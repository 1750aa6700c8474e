"""Benchmark: what an Optuna pruner saves in a Bayesian search, and what it costs in the result.

    dvc repro normalize                      # needs data/processed/
    python benchmarks/sweep_pruning.py [--trials 40] [--epochs 20] [--seeds 0,1,2] \
        [--pruner median|asha] [--pruner-args JSON] [--out benchmarks/results/sweep_pruning.json]

The same study twice per sampler seed, without a pruner and with one (the sweeper's
`hydra.sweeper.pruner`; by default the median pruner with the arguments in PRUNERS): `trials` TPE
trials over learning rate, hidden size, batch size and momentum, `epochs` epochs each, on the real
training and validation splits. Each trial trains with the project's loop (training/loop.py) and
reports its validation accuracy after every epoch, as a sweep job does (experiments/pruning.py); a
pruned trial stops there. Reported per seed and as medians over seeds: the best validation
accuracy found and the CPU time (this process's own, so other load on the machine does not
count), and the pruned / unpruned ratios. Targets (issue 21, for the median pruner): best accuracy
within 0.1 point (or better), CPU time <= 0.4x.

This runs the studies in one process through Optuna's own loop rather than as Hydra sweeps: what
is measured is the search, not the launcher (tests/test_sweep.py checks pruning through the real
sweeper and launchers).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRUNERS = {  # the sweeper's hydra.sweeper.pruner and the arguments measured here
    "median": {"n_startup_trials": 5, "n_warmup_steps": 0},  # the sweeper's default: Optuna's own
    "asha": {},  # SuccessiveHalvingPruner's defaults: keeps the top quarter at each rung
}


def run_study(cfg, data: dict, seed: int, trials: int, epochs: int, pruner_name: str, pruner_args: dict) -> dict:
    import optuna

    from mnist_np.experiments.pruning import make_pruner
    from mnist_np.training import loop

    pruner = make_pruner(pruner_name, pruner_args)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
    trained_epochs = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal trained_epochs
        model = dataclasses.replace(cfg.model, hidden_size=trial.suggest_categorical("hidden_size", [16, 32, 64, 128]))
        train = dataclasses.replace(
            cfg.train,
            lr=trial.suggest_float("lr", 0.005, 0.5, log=True),
            batch_size=trial.suggest_categorical("batch_size", [32, 64, 128]),
            momentum=trial.suggest_categorical("momentum", [0.0, 0.9]),
            epochs=epochs,
            early_stopping=0,
        )

        def report(stats: loop.EpochStats) -> None:
            nonlocal trained_epochs
            trained_epochs += 1
            trial.report(stats.val_accuracy, stats.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            fit = loop.fit(*data["train"], *data["val"], model, train, on_epoch=report, progress=False)
        except FloatingPointError:
            return 0.0
        return fit.kept.val_accuracy

    start = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study.optimize(objective, n_trials=trials, catch=(Exception,))
    seconds = time.process_time() - start
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return {
        "best_val_accuracy": study.best_value,
        "cpu_seconds": round(seconds, 1),
        "epochs_trained": trained_epochs,
        "trials_pruned": pruned,
        "best_params": study.best_params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=40, help="trials per study (default: 40)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per trial (default: 20)")
    parser.add_argument("--seeds", default="0,1,2", help="the TPE sampler's seeds (default: 0,1,2)")
    parser.add_argument("--pruner", default="median", choices=sorted(PRUNERS), help="(default: median)")
    parser.add_argument("--pruner-args", type=json.loads, help="JSON, instead of PRUNERS' (default: PRUNERS')")
    parser.add_argument(
        "--out",
        default=str(REPO / "benchmarks" / "results" / "sweep_pruning.json"),
        help="(default: benchmarks/results/sweep_pruning.json)",
    )
    args = parser.parse_args()
    from mnist_np import config, numerics
    from mnist_np.data import splits

    cfg = config.load_params(REPO / "params.yaml")  # read once: the defaults the search starts from

    processed = REPO / "data" / "processed"
    data = {name: (s.x, s.y) for name in ("train", "val") for s in [splits.load(processed, name)]}
    pruner_args = PRUNERS[args.pruner] if args.pruner_args is None else args.pruner_args
    per_seed = []
    for seed in map(int, args.seeds.split(",")):
        plain = run_study(cfg, data, seed, args.trials, args.epochs, "none", {})
        pruned = run_study(cfg, data, seed, args.trials, args.epochs, args.pruner, pruner_args)
        per_seed.append(
            {
                "seed": seed,
                "no_pruner": plain,
                f"{args.pruner}_pruner": pruned,
                "accuracy_points_lost": round(100 * (plain["best_val_accuracy"] - pruned["best_val_accuracy"]), 3),
                "cpu_ratio": round(pruned["cpu_seconds"] / plain["cpu_seconds"], 3),
            }
        )
        print(json.dumps(per_seed[-1]), flush=True)
    result = {
        "cpu": numerics.describe()["numerics.cpu"],
        "trials": args.trials,
        "epochs_per_trial": args.epochs,
        "pruner": args.pruner,
        "pruner_args": pruner_args,
        "median_accuracy_points_lost": statistics.median(s["accuracy_points_lost"] for s in per_seed),
        "median_cpu_ratio": statistics.median(s["cpu_ratio"] for s in per_seed),
        "targets": {"accuracy_points_lost_at_most": 0.1, "cpu_ratio_at_most": 0.4},
        "per_seed": per_seed,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_seed"}, indent=2))


if __name__ == "__main__":
    main()
