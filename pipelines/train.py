"""DVC stage `train`: fit the network on data/processed/ in a new MLflow run.

Writes models/model.npz and reports/training.csv (the per-epoch history, a DVC plot). The evaluate
stage logs into the same MLflow run, so one `dvc repro` is one run.
"""

from pathlib import Path

from mnist_np import cli, config


def main() -> None:
    args = cli.stage_args(__doc__, data="data/processed", models="models", reports="reports")
    cfg = config.load_params(args.params)
    from mnist_np.experiments import stages  # MLflow loads after the arguments: --help stays quick

    stages.train_run(cfg, Path(args.data), Path(args.models), Path(args.reports))


if __name__ == "__main__":
    cli.run(main, stopped=cli.TRAINING_STOPPED)
