"""Saving and loading network weights as .npz (no pickle), with their shapes checked on load."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import load_npz, save_npz
from .reference import N_CLASSES, N_INPUTS, Params

KEYS = ("W1", "b1", "W2", "b2")


def save(path: str | os.PathLike, params: Params) -> None:
    save_npz(path, **{key: params[key] for key in KEYS})


RETRAIN = "train again with `dvc repro --force train`"


def load(path: str | os.PathLike) -> Params:
    """Weights written by `save`: W1 (784, H), b1 (H,), W2 (H, 10), b2 (10,), all of one float dtype."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; run the train stage first (dvc repro train)")
    params = load_npz(path, RETRAIN)
    missing = [key for key in KEYS if key not in params]
    if missing:
        raise DataError(f"{path} lacks {missing}; it is not a weights file written by the train stage; {RETRAIN}")
    W1 = params["W1"]
    hidden = W1.shape[1] if W1.ndim == 2 else -1
    expected = {"W1": (N_INPUTS, hidden), "b1": (hidden,), "W2": (hidden, N_CLASSES), "b2": (N_CLASSES,)}
    for key, shape in expected.items():
        if params[key].shape != shape or params[key].dtype != W1.dtype or not np.issubdtype(W1.dtype, np.floating):
            raise DataError(
                f"{path}: {key} is {params[key].dtype} {params[key].shape}, expected float "
                f"{shape if hidden > 0 else '(784, H)'} like the other weights; {RETRAIN}"
            )
    return {key: params[key] for key in KEYS}
