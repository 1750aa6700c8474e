"""From the raw IDX files to the arrays the network trains on, and back from disk.

Processed splits are .npz files holding `x` (n, 784) float32 and `y` (n,) uint8, loadable
with allow_pickle=False; `stats.json` beside them records how pixels were scaled so later
consumers (evaluation, prediction) apply exactly the same transform.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig, DatasetSource
from ..errors import DataError
from ..files import load_npz, save_npz, sha256_file, write_json
from .idx import read_idx

STATS_FILE = "stats.json"
JUDGE_FILE = "judge.npz"  # beside it: the page reader's judge of touching digits (serving/touching.py)


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # (n, 784) float32, scaled (and optionally standardized)
    y: np.ndarray  # (n,) uint8 digit labels


def _read_pair(raw_dir: Path, images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    paths = [raw_dir / images, raw_dir / labels]
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path} not found; run the download stage first (dvc repro download)")
    x, y = (read_idx(p) for p in paths)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise DataError(f"{paths[0]}: expected uint8 images of shape (n, rows, cols), got {x.dtype} {x.shape}")
    if y.ndim != 1 or y.dtype != np.uint8:
        raise DataError(f"{paths[1]}: expected uint8 labels of shape (n,), got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{paths[0]} has {len(x)} images but {paths[1]} has {len(y)} labels; they must match")
    if y.size and y.max() > 9:
        raise DataError(f"{paths[1]}: label {int(y.max())} is not a digit 0-9")
    return x, y


def prepare(raw_dir: str | os.PathLike, cfg: DataConfig, source: DatasetSource) -> tuple[dict[str, Split], dict]:
    """Read the raw files the dataset's definition names, validate, split and scale; return the three
    splits and the statistics (scaling, and how images must be prepared for a model trained on them)."""
    raw_dir = Path(raw_dir)
    f = source.files
    x_all, y_all = _read_pair(raw_dir, f.train_images.name, f.train_labels.name)
    x_test, y_test = _read_pair(raw_dir, f.test_images.name, f.test_labels.name)
    if x_all.shape[1:] != x_test.shape[1:]:
        raise DataError(f"training images are {x_all.shape[1:]} but test images are {x_test.shape[1:]}")
    if cfg.val_size >= len(x_all):
        raise DataError(
            f"data.val_size={cfg.val_size} leaves no training images out of {len(x_all)}; "
            f"set data.val_size below {len(x_all)}"
        )

    order = np.random.default_rng(cfg.split_seed).permutation(len(x_all))
    val_idx, train_idx = np.sort(order[: cfg.val_size]), np.sort(order[cfg.val_size :])
    train_images = x_all[train_idx]
    # Statistics of the training split only (in [0, 1] units), accumulated in float64.
    stats = {
        "scale": 255.0,
        "standardize": cfg.standardize,
        "preprocessing": source.preprocessing,
        "mean": float(train_images.mean(dtype=np.float64)) / 255.0,
        "std": float(train_images.std(dtype=np.float64)) / 255.0,
        "image_shape": list(x_all.shape[1:]),
        "sizes": {"train": len(train_idx), "val": len(val_idx), "test": len(x_test)},
        "raw_sha256": {
            spec.name: sha256_file(raw_dir / spec.name)
            for spec in (f.train_images, f.train_labels, f.test_images, f.test_labels)
        },
    }
    splits = {
        "train": Split(transform(train_images, stats), y_all[train_idx]),
        "val": Split(transform(x_all[val_idx], stats), y_all[val_idx]),
        "test": Split(transform(x_test, stats), y_test),
    }
    return splits, stats


def transform(images: np.ndarray, stats: dict) -> np.ndarray:
    """The normalize stage's pixel transform: raw 0-255 images (n, ...) -> (n, 784) float32."""
    x = images.reshape(len(images), -1).astype(np.float32)
    x /= np.float32(stats["scale"])
    if stats["standardize"]:
        x -= np.float32(stats["mean"])
        x /= np.float32(stats["std"])
    return x


def pixels(split: Split, stats: dict) -> np.ndarray:
    """transform's inverse: a split's images as the raw file held them, (n, rows, cols) uint8."""
    x = split.x.astype(np.float32)
    if stats["standardize"]:
        x = x * np.float32(stats["std"]) + np.float32(stats["mean"])
    return np.clip(np.rint(x * np.float32(stats["scale"])), 0, 255).astype(np.uint8).reshape(-1, *stats["image_shape"])


def save(out_dir: str | os.PathLike, splits: dict[str, Split], stats: dict) -> None:
    """Write each split to <name>.npz, then stats.json with each file's SHA-256 added
    (processed_sha256): runs tag their data with it instead of hashing ~190 MB each time."""
    out_dir = Path(out_dir)
    sums = {}
    for name, split in splits.items():
        save_npz(out_dir / f"{name}.npz", x=split.x, y=split.y)
        sums[f"{name}.npz"] = sha256_file(out_dir / f"{name}.npz")
    write_json(out_dir / STATS_FILE, {**stats, "processed_sha256": sums})


REDO_NORMALIZE = "prepare the data again with `dvc repro --force normalize`"


def load(processed_dir: str | os.PathLike, name: str) -> Split:
    """Load one processed split written by `save`, checking it is what `save` writes."""
    path = Path(processed_dir) / f"{name}.npz"
    if not path.is_file():
        raise DataError(f"{path} not found; run the normalize stage first (dvc repro normalize)")
    arrays = load_npz(path, REDO_NORMALIZE)
    x, y = arrays.get("x"), arrays.get("y")
    if x is None or y is None:
        raise DataError(f"{path} lacks the arrays x and y (it holds {sorted(arrays)}); {REDO_NORMALIZE}")
    if (
        x.ndim != 2
        or not np.issubdtype(x.dtype, np.floating)
        or y.shape != (len(x),)
        or not np.issubdtype(y.dtype, np.integer)
    ):
        raise DataError(
            f"{path} holds x {x.dtype} {x.shape} and y {y.dtype} {y.shape}, expected float images "
            f"(n, pixels) and integer labels (n,); {REDO_NORMALIZE}"
        )
    return Split(x, y)


def load_stats(processed_dir: str | os.PathLike) -> dict:
    path = Path(processed_dir) / STATS_FILE
    if not path.is_file():
        raise DataError(f"{path} not found; run the normalize stage first (dvc repro normalize)")
    try:
        stats = json.loads(path.read_text())
        _ = stats["sizes"]["train"], stats["standardize"], stats["mean"], stats["std"]
        _ = stats["processed_sha256"], stats["preprocessing"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not the normalize stage's statistics ({exc!r}); {REDO_NORMALIZE}") from exc
    return stats
