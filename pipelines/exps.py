"""The DVC experiments as a table one can read (`make exps`): best test accuracy first, only the
params and metrics that differ between experiments, no dependency hashes (plain `dvc exp show`
has about 60 columns, most of them the hashes of code files).

    python pipelines/exps.py            # the table
    python pipelines/exps.py --csv      # any further dvc exp show options (--md, -A, ...)

Hydra sweeps are not DVC experiments: they live in MLflow (pipelines/compare.py).
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

SHOW = [
    "exp",
    "show",
    "--no-pager",
    "--only-changed",
    *("--sort-by", "reports/metrics.json:test_accuracy", "--sort-order", "desc"),
    # Dependencies (code, data, conf/, models/) and DVC's own bookkeeping columns.
    *("--drop", r"^(src|pipelines|data|conf|models)(/|$)|^(rev|typ|parent)$"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _, passed_on = parser.parse_known_args()  # everything but --help goes to dvc exp show
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"
    os.execv(dvc, [dvc, *SHOW, *passed_on])


if __name__ == "__main__":
    main()
