"""Hydra plugins of this project. Hydra instantiates sweepers only from the `hydra_plugins` namespace
package, so the sweepers are named here; the Optuna one lives in mnist_np.experiments.optuna_sweeper."""

from collections.abc import Sequence

# Private: Hydra exposes its basic sweeper nowhere else. tests/test_private_apis.py fails by name the
# day an upgrade moves it.
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from mnist_np.experiments.optuna_sweeper import OptunaSweeper as _OptunaSweeper


class OptunaSweeper(_OptunaSweeper):
    """Bayesian search over Optuna's ask-and-tell interface (conf/hydra/sweeper/mnist_optuna.yaml)."""


class GridSweeper(BasicSweeper):
    """Hydra's basic sweeper (every combination of the overrides; conf/hydra/sweeper/mnist_grid.yaml,
    the default) without its second composition of every job before the first starts: the sweep's
    callback (mnist_np.experiments.sweep_parent.SweepCallback) has already composed every combination and
    checked it against the schema and the prepared data. Hydra's pass took ~50 ms a job."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        return None
