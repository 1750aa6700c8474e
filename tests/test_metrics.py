"""Confusion matrix and per-class scores on a hand-checked example."""

import numpy as np
import pytest

from mnist_np.training.metrics import confusion_matrix, per_class


def test_confusion_and_per_class_scores():
    y_true = np.array([0, 0, 0, 1, 1, 2], dtype=np.uint8)
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    cm = confusion_matrix(y_true, y_pred, n_classes=3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    scores = per_class(cm)
    assert scores["0"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3}
    assert scores["1"]["precision"] == 0.5 and scores["1"]["recall"] == 0.5
    assert scores["2"]["precision"] == 0.5 and scores["2"]["recall"] == 1.0


def test_class_never_predicted_scores_zero_not_nan():
    scores = per_class(confusion_matrix(np.array([0, 1]), np.array([0, 0]), n_classes=2))
    assert scores["1"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
