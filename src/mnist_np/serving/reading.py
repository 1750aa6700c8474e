"""When the network's answer is not worth giving: the confidence below which a prediction is "not
readable" instead of a confident wrong digit.

The threshold is chosen when the network is trained, on the validation split it never trained on:
the REJECTED_SHARE quantile of the clean validation digits' top probability, so that the default
turns away that share of clean digits (the least sure ones, which it also misreads most). It is
stored with the model, as models/reading.json beside the weights and as the MLflow model's metadata,
and `mnist-predict --reject-below P` overrides it (0: never).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import atomic_path

READING_FILE = "reading.json"
REJECTED_SHARE = 0.01


def choose(probabilities: np.ndarray) -> dict:
    """The threshold for a model whose validation digits got `probabilities` (n, 10), with how it
    was chosen and what share of those digits it rejects (strictly below it)."""
    top = np.max(probabilities, axis=1)
    threshold = float(np.quantile(top, REJECTED_SHARE, method="lower"))  # one of the values: the same bits everywhere
    return {
        "reject_below": threshold,
        "chosen_on": "validation split",
        "rejected_share_of_validation": float(np.mean(top < threshold)),
    }


def save(folder: str | os.PathLike, reading: dict) -> Path:
    path = Path(folder) / READING_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(reading, indent=2) + "\n")
    return path


def threshold_beside(weights_path: str | os.PathLike) -> float | None:
    """The threshold stored beside a weights file, or None (a model trained before it was stored)."""
    path = Path(weights_path).with_name(READING_FILE)
    if not path.is_file():
        return None
    try:
        return float(json.loads(path.read_text())["reject_below"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is damaged ({exc}); train again (dvc repro --force train) or delete it") from exc
