"""Accuracy floors on the real MNIST test set: the default configuration and conf/experiment/best.yaml."""

import pytest

from helpers import SOURCE, project_config
from mnist_np.data import splits
from mnist_np.training import loop, metrics

pytestmark = pytest.mark.slow


def train_and_test(mnist_mirror, overrides):
    cfg = project_config(*overrides)
    prepared, _ = splits.prepare(mnist_mirror, cfg.data, SOURCE)
    fit = loop.fit(
        prepared["train"].x,
        prepared["train"].y,
        prepared["val"].x,
        prepared["val"].y,
        cfg.model,
        cfg.train,
        progress=False,
    )
    return cfg, fit.history, metrics.evaluate(fit.params, prepared["test"].x, prepared["test"].y)[1]


def test_default_config_reaches_93_percent_on_the_test_set(mnist_mirror):
    cfg, history, test_accuracy = train_and_test(mnist_mirror, [])
    assert len(history) == cfg.train.epochs
    assert test_accuracy >= 0.93, f"test accuracy {test_accuracy:.4f} with the default configuration"


def test_best_config_reaches_the_published_98_4_percent(mnist_mirror):
    # Simard et al. 2003 (LeCun's table): 2-layer network, 800 hidden units, cross-entropy, 1.6% error.
    cfg, history, test_accuracy = train_and_test(mnist_mirror, ["+experiment=best"])
    assert cfg.model.hidden_size > 10 and cfg.train.early_stopping > 0
    assert test_accuracy >= 0.984, f"test accuracy {test_accuracy:.4f} with conf/experiment/best.yaml"
