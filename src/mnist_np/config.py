"""The parameter schema: every setting's type and allowed range.

The values, defaults included, live in one place: `conf/` (Hydra), composed into `params.yaml`.
This module checks a composition against the dataclasses below (as an OmegaConf structured config)
before any work starts, so a typo, a missing key or a bad value fails fast naming the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError
from .numerics import MODES as NUMERICS

INIT_SCHEMES = ("uniform", "he", "glorot")
DTYPES = ("float32", "float64")
PREPROCESSING = ("digits", "none")  # how a trained model's input images are prepared (serving/preprocess.py)


def _check(ok: bool, key: str, value: object, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {rule}. Fix it in conf/ (or override it, e.g. {key}=...)")


# Each field's meaning is commented beside its value in conf/.


@dataclass
class FileSpec:
    name: str
    sha256: str


@dataclass
class MnistFiles:
    train_images: FileSpec
    train_labels: FileSpec
    test_images: FileSpec
    test_labels: FileSpec


@dataclass
class DatasetSource:
    """conf/dataset/<name>.yaml: where the raw files come from (not a run parameter)."""

    mirrors: list[str]
    files: MnistFiles
    preprocessing: str
    timeout_s: float
    retries: int
    backoff_s: float

    def __post_init__(self) -> None:
        _check(len(self.mirrors) > 0, "mirrors", self.mirrors, "list at least one mirror")
        _check(
            self.preprocessing in PREPROCESSING, "preprocessing", self.preprocessing, f"must be one of {PREPROCESSING}"
        )
        _check(self.timeout_s > 0, "timeout_s", self.timeout_s, "must be > 0")
        _check(self.retries >= 1, "retries", self.retries, "must be >= 1")
        _check(self.backoff_s >= 0, "backoff_s", self.backoff_s, "must be >= 0")


@dataclass
class DataConfig:
    dataset: str
    val_size: int
    split_seed: int
    standardize: bool
    judge_columns: int

    def __post_init__(self) -> None:
        _check(
            re.fullmatch(r"[A-Za-z0-9_-]+", self.dataset) is not None,
            "data.dataset",
            self.dataset,
            "must name a file conf/dataset/<name>.yaml (letters, digits, _ and -)",
        )
        _check(self.val_size >= 1, "data.val_size", self.val_size, "must be >= 1")
        _check(self.judge_columns >= 1, "data.judge_columns", self.judge_columns, "must be >= 1")


@dataclass
class ModelConfig:
    hidden_size: int
    init: str

    def __post_init__(self) -> None:
        _check(self.hidden_size >= 1, "model.hidden_size", self.hidden_size, "must be >= 1")
        _check(self.init in INIT_SCHEMES, "model.init", self.init, f"must be one of {INIT_SCHEMES}")


@dataclass
class AugmentConfig:
    enabled: bool
    rotation: float
    scale: float
    shear: float
    shift: float
    elastic_alpha: float
    elastic_sigma: float

    def __post_init__(self) -> None:
        k = "train.augment."
        _check(0 <= self.rotation <= 90, k + "rotation", self.rotation, "must be in [0, 90] degrees")
        _check(0 <= self.scale < 1, k + "scale", self.scale, "must be in [0, 1)")
        _check(0 <= self.shear <= 60, k + "shear", self.shear, "must be in [0, 60] degrees")
        _check(self.shift >= 0, k + "shift", self.shift, "must be >= 0 pixels")
        _check(self.elastic_alpha >= 0, k + "elastic_alpha", self.elastic_alpha, "must be >= 0 (0 = no elastic part)")
        _check(self.elastic_sigma > 0, k + "elastic_sigma", self.elastic_sigma, "must be > 0 pixels")


@dataclass
class TrainConfig:
    lr: float
    batch_size: int
    epochs: int
    seed: int
    dtype: str
    lr_decay: float
    momentum: float
    weight_decay: float
    early_stopping: int
    augment: AugmentConfig
    numerics: str

    def __post_init__(self) -> None:
        _check(self.lr > 0, "train.lr", self.lr, "must be > 0")
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, "must be >= 1")
        _check(self.epochs >= 1, "train.epochs", self.epochs, "must be >= 1")
        _check(self.dtype in DTYPES, "train.dtype", self.dtype, f"must be one of {DTYPES}")
        _check(0 < self.lr_decay <= 1, "train.lr_decay", self.lr_decay, "must be in (0, 1]")
        _check(0 <= self.momentum < 1, "train.momentum", self.momentum, "must be in [0, 1)")
        _check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "must be >= 0")
        _check(self.early_stopping >= 0, "train.early_stopping", self.early_stopping, "must be >= 0 (0 = off)")
        _check(self.numerics in NUMERICS, "train.numerics", self.numerics, f"must be one of {NUMERICS}")


@dataclass
class TrackingConfig:
    experiment: str
    job_wait_s: float  # how long a sweep job waits for an unreachable tracking server before failing

    def __post_init__(self) -> None:
        _check(bool(self.experiment.strip()), "tracking.experiment", self.experiment, "must not be empty")
        _check(self.job_wait_s >= 0, "tracking.job_wait_s", self.job_wait_s, "must be >= 0")


@dataclass
class Config:
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    tracking: TrackingConfig


def validate(raw: Mapping[str, Any], schema: type = Config) -> Any:
    """Check a plain or OmegaConf mapping against the schema and return typed dataclasses."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), raw)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        reason = getattr(exc, "msg", None) or str(exc)
        raise ConfigError(f"parameter {key}: {reason.splitlines()[0]}. Fix it in conf/ or in the override") from exc


def load_params(path: str | os.PathLike = "params.yaml") -> Config:
    """Read and validate a params.yaml written by Hydra composition."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found; run from the repository root or regenerate it with `make params`")
    return validate(OmegaConf.load(path))


def dataset_file(name: str) -> str:
    """The definition of dataset `name` (data.dataset): conf/dataset/<name>.yaml."""
    return f"conf/dataset/{name}.yaml"


DATASET = dataset_file("mnist")


def load_source(path: str | os.PathLike = DATASET) -> DatasetSource:
    """Read and validate a dataset definition (mirrors, checksums, network settings)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path} not found; write it (conf/dataset/mnist.yaml shows the keys) and select it with "
            "`make params ARGS=data.dataset=<name>`, or run from the repository root"
        )
    try:
        return validate(OmegaConf.load(path), DatasetSource)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def flatten(cfg: Config) -> dict[str, Any]:
    """Dotted names for every leaf parameter, e.g. {"model.hidden_size": 10}."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            out[prefix] = node

    walk("", asdict(cfg))
    return out
