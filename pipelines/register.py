"""Register the best run's MLflow model (by validation accuracy) under a name, with an alias.

python pipelines/register.py --name mnist-mlp                  # best child of the latest sweep
python pipelines/register.py --name mnist-mlp --sweep <parent run id>
python pipelines/register.py --name mnist-mlp --all-runs       # best of every run
mnist-predict --model models:/mnist-mlp@champion digit.png
"""

import argparse

from mnist_np import cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="registered model name")
    parser.add_argument("--alias", default="champion", help="alias pointed at the new version (default: champion)")
    parser.add_argument("--experiment", help="MLflow experiment name (default: tracking.experiment in params.yaml)")
    parser.add_argument("--sweep", default="latest", help="a sweep's parent run id, or 'latest' (default)")
    parser.add_argument("--all-runs", action="store_true", help="consider every run, not one sweep")
    args = parser.parse_args()
    from mnist_np.experiments import compare  # MLflow loads after the arguments: --help stays quick
    from mnist_np.tracking import store

    store.use_store()
    run_id, version = compare.register_best(
        args.experiment or store.project_experiment(), args.name, None if args.all_runs else args.sweep, args.alias
    )
    print(
        f"registered runs:/{run_id}/model as {args.name} version {version}; "
        f"alias {args.alias} -> models:/{args.name}@{args.alias}"
    )


if __name__ == "__main__":
    cli.run(main)
