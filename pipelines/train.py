"""DVC stage `train`: fit the network on data/processed/ and start this pipeline run's MLflow run.

Writes the weights and the MLflow run id to models/, the per-epoch history to reports/.
The evaluate stage resumes the same MLflow run, so one `dvc repro` is one run.
"""

from pathlib import Path

import mlflow

from mnist_np import cli, config, stages, tracking
from mnist_np.files import write_json



def main() -> None:
    args = cli.stage_args(__doc__, data="data/processed", models="models", reports="reports")
    cfg = config.load_params(args.params)
    data_dir, model_dir = Path(args.data), Path(args.models)
    checksums = stages.data_checksums(data_dir)  # also fails fast when normalize has not run

    root = tracking.repo_root()
    experiment_id = tracking.setup(cfg.tracking.experiment, root)
    with mlflow.start_run(experiment_id=experiment_id, run_name=stages.run_name(cfg),
                          tags=tracking.run_tags(root, checksums, "dvc")) as run:
        stages.train(cfg, data_dir, model_dir / stages.WEIGHTS_FILE, Path(args.reports) / stages.HISTORY_FILE)
        write_json(model_dir / stages.RUN_FILE, {"run_id": run.info.run_id, "experiment_id": experiment_id})


if __name__ == "__main__":
    cli.run(main)
