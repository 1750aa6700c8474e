"""Accuracy floors on the real MNIST test set: the default configuration trained in full, and
conf/experiment/best.yaml held to its recorded full run (conftest: trained_default, trained_best).
conf/experiment/augmented.yaml (99%) takes too long for the suite: test_augment trains it shortened."""

import csv
import json
from pathlib import Path

import pytest

from helpers import REPO

pytestmark = pytest.mark.slow

# reports/training.csv and reports/metrics.json of `make params ARGS=+experiment=best && make run`
# (40 epochs at hidden 2048: about 3.5 minutes on one core, too long for the suite).
RECORDED_BEST = Path(__file__).parent / "data" / "best"
BEST_EPOCHS = 3  # conftest.trained_best
RERECORD = (
    "re-run `make params ARGS=+experiment=best && make run`, check its accuracy, and copy its "
    "reports/training.csv and reports/metrics.json to tests/data/best/"
)


def test_default_config_reaches_93_percent_on_the_test_set(trained_default):
    with open(trained_default.root / "training.csv") as f:
        assert len(list(csv.DictReader(f))) == 30  # every epoch of the default configuration ran
    accuracy = trained_default.test_accuracy()
    assert accuracy >= 0.93, f"test accuracy {accuracy:.4f} with the default configuration"


def test_best_config_reaches_the_published_98_4_percent(trained_best):
    """With the portable numerics a seed gives the same bits on any machine and load
    (test_reproducible), so the best configuration's first epochs, trained here, must match its
    recorded full run to the last digit; that run's weights reach the published 98.4%."""
    # Simard et al. 2003 (LeCun's table): 2-layer network, 800 hidden units, cross-entropy, 1.6% error.
    trained = (trained_best.root / "training.csv").read_text().splitlines()
    recorded = (RECORDED_BEST / "training.csv").read_text().splitlines()
    assert len(trained) == 1 + BEST_EPOCHS and len(recorded) > len(trained)
    assert trained == recorded[: len(trained)], f"the best configuration no longer trains as recorded: {RERECORD}"
    accuracy = json.loads((RECORDED_BEST / "metrics.json").read_text())["test_accuracy"]
    assert accuracy >= 0.984, f"recorded test accuracy {accuracy:.4f} with conf/experiment/best.yaml"
    assert f"**{accuracy:.2%}**" in (REPO / "README.md").read_text(), "the README's table shows another figure"
    assert trained_best.test_accuracy() >= 0.97  # the shortened run, which test_predict reads digits with
