"""Compare MLflow runs: a table (pandas) of the swept parameters and metrics, plus figures.

python pipelines/compare.py                         # every run, best validation accuracy first
python pipelines/compare.py --sweep latest --top 5  # the newest Hydra sweep's children
python pipelines/compare.py --sort test_loss --csv runs.csv --markdown runs.md
python pipelines/compare.py --numerics --no-plots   # with what computed each run: CPU, BLAS kernels, mode
"""

import argparse
import logging
from pathlib import Path

import pandas as pd

from mnist_np import cli
from mnist_np.experiments import RANK_METRIC

log = logging.getLogger("compare")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", help="MLflow experiment name (default: tracking.experiment in params.yaml)")
    parser.add_argument("--sweep", help="a sweep's parent run id, or 'latest' (default: every run)")
    parser.add_argument("--top", type=int, help="show only the best N runs (default: all)")
    parser.add_argument("--sort", default=RANK_METRIC, help=f"metric or parameter to sort by (default: {RANK_METRIC})")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown")
    parser.add_argument(
        "--plots", type=Path, default=Path("comparison"), help="figure directory (default: comparison/)"
    )
    parser.add_argument("--no-plots", action="store_true", help="print the table only")
    parser.add_argument(
        "--numerics", action="store_true", help="add what computed each run: mode, CPU, BLAS kernels, versions"
    )
    args = parser.parse_args()
    from mnist_np.experiments import compare  # MLflow loads after the arguments: --help stays quick
    from mnist_np.tracking import store

    store.use_store()
    experiment = args.experiment or store.project_experiment()
    everything = compare.runs_table(experiment, args.sweep, args.sort, args.numerics)
    table = compare.best(everything, args.top)
    print(f"{compare.describe_selection(experiment, table)}, by {args.sort}:")
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4f}".format):
        print(compare.readable(table).to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    if args.markdown:
        args.markdown.write_text(table.drop(columns=["start_time"]).to_markdown(index=False, floatfmt=".4f") + "\n")
    if not args.no_plots:
        for path in compare.write_figures(table, args.plots, everything):
            log.info("wrote %s", path)


if __name__ == "__main__":
    cli.run(main)
