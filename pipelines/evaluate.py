"""DVC stage `evaluate`: score models/model.npz on the 10,000 test images.

Writes reports/metrics.json (DVC metrics), reports/classification.json (per-class scores and the
confusion matrix) and reports/predictions.csv (for `dvc plots`' confusion template), and logs the
test metrics into the MLflow run the train stage started.
"""

from pathlib import Path

from mnist_np import cli, config


def main() -> None:
    args = cli.stage_args(__doc__, data="data/processed", models="models", reports="reports")
    cfg = config.load_params(args.params)
    from mnist_np.experiments import stages  # MLflow loads after the arguments: --help stays quick

    stages.evaluate_run(cfg, Path(args.data), Path(args.models), Path(args.reports))


if __name__ == "__main__":
    cli.run(main, stopped="the run is marked KILLED")
