"""Hydra plugins of this project. Hydra instantiates sweepers only from the `hydra_plugins` namespace
package, so the sweeper is named here; it lives in mnist_np.experiments.search."""

from mnist_np.experiments.search import OptunaSweeper as _OptunaSweeper


class OptunaSweeper(_OptunaSweeper):
    """Bayesian search over Optuna's ask-and-tell interface (conf/hydra/sweeper/mnist_optuna.yaml)."""
