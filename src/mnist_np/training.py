"""The training loop: shuffled mini-batch gradient descent with per-epoch statistics.

No I/O and no tracking here: the caller gets each epoch's numbers through `on_epoch`
(the train stage logs them to MLflow and CSV) and the final weights as the return value.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from . import network
from .config import ModelConfig, TrainConfig
from .errors import TrainingError


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's batches, as the weights moved (no extra pass)
    train_accuracy: float
    val_loss: float  # after the epoch's last step
    val_accuracy: float
    seconds: float  # wall time of the epoch's gradient steps


def fit(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
        model: ModelConfig, train: TrainConfig,
        on_epoch: Callable[[EpochStats], None] | None = None,
        progress: bool = True) -> tuple[network.Params, list[EpochStats]]:
    """Train a fresh network; same data, configs and seed give bit-identical weights."""
    dtype = np.dtype(train.dtype)
    x_train, x_val = x_train.astype(dtype, copy=False), x_val.astype(dtype, copy=False)
    # Independent streams for initialisation and batch order, both from the one seed.
    init_rng, order_rng = np.random.default_rng(train.seed).spawn(2)
    params = network.init_params(model.hidden_size, init_rng, model.init, dtype, n_in=x_train.shape[1])
    n, history = len(x_train), []

    for epoch in range(1, train.epochs + 1):
        start = time.perf_counter()
        order = order_rng.permutation(n)
        # One gather per epoch, then contiguous slices: cheaper than fancy-indexing every batch.
        xs, ys = x_train[order], y_train[order]
        loss_sum, correct = 0.0, 0
        batches = range(0, n, train.batch_size)
        for i in tqdm(batches, desc=f"epoch {epoch}/{train.epochs}", unit="batch",
                      disable=not progress, leave=False, mininterval=1.0):
            xb, yb = xs[i:i + train.batch_size], ys[i:i + train.batch_size]
            fwd = network.forward(params, xb)
            loss_sum += network.cross_entropy(fwd, yb) * len(yb)
            correct += int(np.count_nonzero(fwd.P.argmax(axis=1) == yb))
            network.sgd_step(params, network.backward(params, xb, yb, fwd), train.lr)
        seconds = time.perf_counter() - start

        if not all(np.isfinite(p).all() for p in params.values()):
            raise TrainingError(
                f"weights became non-finite in epoch {epoch} with train.lr={train.lr}; "
                "lower train.lr (or standardize the data) and run again")
        val_loss, val_acc, _ = network.loss_and_accuracy(params, x_val, y_val)
        stats = EpochStats(epoch, loss_sum / n, correct / n, val_loss, val_acc, seconds)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    return params, history
