"""DVC stage `evaluate`: score models/model.npz on the 10,000 test images.

Writes reports/metrics.json (DVC metrics), reports/classification.json (per-class scores and the
confusion matrix) and reports/predictions.csv (for `dvc plots`' confusion template), and logs the
test metrics into the MLflow run the train stage started.
"""

import logging
from pathlib import Path

from mnist_np import cli, config
from mnist_np.experiments import stages

log = logging.getLogger("evaluate")


def main() -> None:
    args = cli.stage_args(__doc__, data="data/processed", models="models", reports="reports")
    cfg = config.load_params(args.params)
    run_id, summary = stages.evaluate_run(cfg, Path(args.data), Path(args.models), Path(args.reports))
    log.info(
        "test accuracy %.4f, test loss %.4f (MLflow run %s)", summary["test_accuracy"], summary["test_loss"], run_id
    )


if __name__ == "__main__":
    cli.run(main)
