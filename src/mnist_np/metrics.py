"""Classification metrics from true and predicted labels: confusion matrix, per-class precision/recall/F1."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """counts[i, j] = number of samples of true class i predicted as class j."""
    return np.bincount(y_true.astype(np.int64) * n_classes + y_pred, minlength=n_classes ** 2).reshape(n_classes, n_classes)


def per_class(confusion: np.ndarray) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class; 0.0 where a ratio has no denominator."""
    tp = np.diag(confusion).astype(np.float64)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    precision, recall = ratio(tp, predicted), ratio(tp, actual)
    f1 = ratio(2 * precision * recall, precision + recall)
    return {str(c): {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                     "support": int(actual[c])} for c in range(len(confusion))}
