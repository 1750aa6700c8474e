"""DVC stage `evaluate`: score the trained weights on the 10,000 test images.

Writes reports/metrics.json (DVC metrics), reports/classification.json (per-class scores and the
confusion matrix) and reports/predictions.csv (for `dvc plots`' confusion template), and logs the
test metrics into the MLflow run the train stage started.
"""

import json
import logging
from pathlib import Path

import mlflow

from mnist_np import cli, config, stages, tracking, weights
from mnist_np.errors import DataError

log = logging.getLogger("evaluate")


def main() -> None:
    args = cli.stage_args(__doc__, data="data/processed", models="models", reports="reports")
    cfg = config.load_params(args.params)
    model_dir = Path(args.models)
    params = weights.load(model_dir / stages.WEIGHTS_FILE)
    run_file = model_dir / stages.RUN_FILE
    if not run_file.is_file():
        raise DataError(f"{run_file} not found; run the train stage first (dvc repro train)")
    run_id = json.loads(run_file.read_text())["run_id"]

    tracking.setup(cfg.tracking.experiment)
    try:
        mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise DataError(f"MLflow run {run_id} from {run_file} is not in {mlflow.get_tracking_uri()}; "
                        "retrain into this store with `dvc repro --force train`") from exc
    with mlflow.start_run(run_id=run_id):
        summary = stages.evaluate(params, args.data, args.reports)
    log.info("test accuracy %.4f, test loss %.4f (MLflow run %s)", summary["test_accuracy"], summary["test_loss"], run_id)


if __name__ == "__main__":
    cli.run(main)
