"""Scoring a network: loss and accuracy over a split, confusion matrix, per-class precision/recall/F1."""

from __future__ import annotations

import numpy as np

from ..model import reference


def evaluate(
    params: reference.Params, x: np.ndarray, y: np.ndarray, chunk: int = 10_000
) -> tuple[float, float, np.ndarray]:
    """Mean cross-entropy, accuracy and predicted labels for images stored as rows (n, 784),
    computed with the reference network `chunk` images at a time."""
    loss, predictions = 0.0, []
    for i in range(0, len(x), chunk):
        fwd = reference.forward(params, x[i : i + chunk].T)
        loss += reference.cross_entropy(fwd.Z2, y[i : i + chunk]) * fwd.Z2.shape[1]
        predictions.append(fwd.Z2.argmax(axis=0))
    predicted = np.concatenate(predictions)
    return loss / len(x), float(np.mean(predicted == y)), predicted


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """counts[i, j] = number of samples of true class i predicted as class j."""
    return np.bincount(y_true.astype(np.int64) * n_classes + y_pred, minlength=n_classes**2).reshape(
        n_classes, n_classes
    )


def per_class(confusion: np.ndarray) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class; 0.0 where a ratio has no denominator."""
    tp = np.diag(confusion).astype(np.float64)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    precision, recall = ratio(tp, predicted), ratio(tp, actual)
    f1 = ratio(2 * precision * recall, precision + recall)
    return {
        str(c): {
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "support": int(actual[c]),
        }
        for c in range(len(confusion))
    }
