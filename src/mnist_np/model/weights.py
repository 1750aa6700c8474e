"""Saving and loading network weights as .npz (no pickle), with their shapes checked on load."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import save_npz
from .reference import N_CLASSES, Params

KEYS = ("W1", "b1", "W2", "b2")


def save(path: str | os.PathLike, params: Params) -> None:
    save_npz(path, **{key: params[key] for key in KEYS})


def load(path: str | os.PathLike) -> Params:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; run the train stage first (dvc repro train)")
    with np.load(path, allow_pickle=False) as z:
        missing = [key for key in KEYS if key not in z.files]
        if missing:
            raise DataError(f"{path} lacks {missing}; it is not a weights file written by the train stage")
        params = {key: z[key] for key in KEYS}
    n_in, hidden = params["W1"].shape
    expected = {"b1": (hidden,), "W2": (hidden, N_CLASSES), "b2": (N_CLASSES,)}
    for key, shape in expected.items():
        if params[key].shape != shape:
            raise DataError(
                f"{path}: {key} has shape {params[key].shape}, expected {shape} for W1 {params['W1'].shape}"
            )
    return params
