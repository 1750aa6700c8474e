"""Where to look at results: a sweep's HTML report (rebuilt) and its runs table in the MLflow UI, or
the pipeline's run. `make report` rebuilds the newest sweep's; `make run` ends with the pipeline's.

python pipelines/report.py                    # the newest sweep: report rebuilt (in its folder, logged to it), link
python pipelines/report.py --sweep <run id>   # a given sweep's
python pipelines/report.py --out sweep.html   # written elsewhere
python pipelines/report.py --pipeline         # the run that wrote models/model.npz: its report and link
"""

import argparse
from pathlib import Path

from mnist_np import cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", default="latest", help="a sweep's parent run id, or 'latest' (default)")
    parser.add_argument("--out", type=Path, help="where to write the report (default: the sweep's folder)")
    parser.add_argument("--experiment", help="MLflow experiment name (default: tracking.experiment in params.yaml)")
    parser.add_argument("--pipeline", action="store_true", help="the pipeline's run (models/, reports/) instead")
    args = parser.parse_args()
    from mnist_np.experiments import stages, sweep_parent  # MLflow loads after the arguments: --help stays quick
    from mnist_np.tracking import store

    store.use_store()
    experiment = args.experiment or store.project_experiment()
    if args.pipeline:
        stages.show_pipeline_run(experiment, Path("models"), Path("reports"))
    else:
        sweep_parent.show_sweep(experiment, args.sweep, args.out)


if __name__ == "__main__":
    cli.run(main)
