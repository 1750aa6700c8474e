"""Shared fixtures: tiny generated MNIST-like IDX files, the real MNIST mirror, an isolated MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mnist_np import config
from mnist_np.files import sha256_file
from mnist_np.idx import write_idx

REPO = Path(__file__).resolve().parents[1]
NAMES = {"train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
         "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path_factory, monkeypatch):
    """Unit tests never write into the repository's mlflow.db."""
    store = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")


def write_tiny_mnist(directory: Path, n_train: int = 120, n_test: int = 40, seed: int = 0) -> dict[str, Path]:
    """Four small IDX files whose images carry their label as a bright column, so they are learnable."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        images[np.arange(n), :, 2 + 2 * labels] = 255
        prefix = "train" if split == "train" else "test"
        paths[f"{prefix}_images"] = directory / NAMES[f"{prefix}_images"]
        paths[f"{prefix}_labels"] = directory / NAMES[f"{prefix}_labels"]
        write_idx(paths[f"{prefix}_images"], images)
        write_idx(paths[f"{prefix}_labels"], labels)
    return paths


def tiny_config(paths: dict[str, Path], **overrides) -> config.Config:
    """The composed project config, pointed at tiny files (their own checksums) and shrunk."""
    raw = config.compose(REPO / "conf", [f"{k}={v}" for k, v in overrides.items()])
    for key, path in paths.items():
        raw["data"]["files"][key] = {"name": path.name, "sha256": sha256_file(path)}
    return config.validate(raw)


@pytest.fixture
def tiny_mnist(tmp_path) -> tuple[Path, config.Config]:
    paths = write_tiny_mnist(tmp_path / "mirror")
    return tmp_path / "mirror", tiny_config(paths, **{"data.val_size": 20, "train.epochs": 2})


@pytest.fixture(scope="session")
def mnist_mirror() -> Path:
    """The real MNIST files: $MNIST_MIRROR, else ../shared/mnist beside the repository."""
    path = Path(os.environ.get("MNIST_MIRROR") or REPO.parent / "shared" / "mnist").resolve()
    if not (path / NAMES["train_images"]).is_file():
        pytest.fail(f"real MNIST not found in {path}; set MNIST_MIRROR to a directory with the four original files")
    return path
