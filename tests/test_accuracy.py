"""The default configuration on real MNIST reaches the project's accuracy floor."""

import pytest

from mnist_np import config, data, network, training

from conftest import REPO

pytestmark = pytest.mark.slow


def test_default_config_reaches_92_percent_on_the_test_set(mnist_mirror):
    cfg = config.validate(config.compose(REPO / "conf"))
    splits, _ = data.prepare(mnist_mirror, cfg.data)
    params, history = training.fit(splits["train"].x, splits["train"].y, splits["val"].x, splits["val"].y,
                                   cfg.model, cfg.train, progress=False)
    _, test_accuracy, _ = network.loss_and_accuracy(params, splits["test"].x, splits["test"].y)
    assert len(history) == cfg.train.epochs
    assert test_accuracy >= 0.92, f"test accuracy {test_accuracy:.4f} with the default configuration"
