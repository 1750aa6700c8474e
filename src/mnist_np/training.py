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
    """Train a fresh network; same data, configs and seed give bit-identical weights.

    The inputs are never modified. With train.early_stopping > 0 the weights of the best
    validation epoch are returned.
    """
    dtype = np.dtype(train.dtype)
    x, y = x_train.astype(dtype, copy=False), y_train
    x_val = x_val.astype(dtype, copy=False)
    # Independent streams for initialisation and batch order, both from the one seed.
    init_rng, order_rng = np.random.default_rng(train.seed).spawn(2)
    params = network.init_params(model.hidden_size, init_rng, model.init, dtype, n_in=x.shape[1])
    velocity = {k: np.zeros_like(v) for k, v in params.items()} if train.momentum else None
    n, history = len(x), []
    ws = network.Workspace(params, train.batch_size)
    # Each batch is gathered into these buffers: no shuffled copy of the whole training set
    # (which would double its memory), and the batch is contiguous for BLAS.
    xb_buf, yb_buf = np.empty((train.batch_size, x.shape[1]), dtype), np.empty(train.batch_size, y.dtype)
    likelihood, predicted = np.empty(n, dtype), np.empty(n, np.intp)  # ln p_y and argmax, per sample
    best: tuple[float, network.Params, int] | None = None  # (val accuracy, weights, epoch)

    for epoch in range(1, train.epochs + 1):
        start = time.perf_counter()
        lr = train.lr * train.lr_decay ** (epoch - 1)
        order = order_rng.permutation(n)
        for i in tqdm(range(0, n, train.batch_size), desc=f"epoch {epoch}/{train.epochs}", unit="batch",
                      disable=not progress, leave=False, mininterval=1.0):
            batch = order[i:i + train.batch_size]
            m = len(batch)
            xb, yb = np.take(x, batch, axis=0, out=xb_buf[:m]), np.take(y, batch, out=yb_buf[:m])
            fwd = network.forward(params, xb, ws)
            # Per-sample statistics go into epoch-long arrays (in batch order): no Python arithmetic per batch.
            network.log_likelihoods(fwd, yb, out=likelihood[i:i + m])
            np.argmax(fwd.P, axis=1, out=predicted[i:i + m])
            steps = network.backward(params, xb, yb, fwd, scale=lr, ws=ws)
            network.apply_steps(params, steps, train.momentum, lr * train.weight_decay, velocity)
        seconds = time.perf_counter() - start

        if not all(np.isfinite(p).all() for p in params.values()):
            raise TrainingError(
                f"weights became non-finite in epoch {epoch} with train.lr={train.lr}; "
                "lower train.lr (or standardize the data) and run again")
        val_loss, val_acc, _ = network.loss_and_accuracy(params, x_val, y_val)
        stats = EpochStats(epoch, -float(likelihood.mean(dtype=np.float64)), float(np.mean(predicted == y[order])),
                           val_loss, val_acc, seconds)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
        if train.early_stopping:
            if best is None or val_acc > best[0]:
                best = (val_acc, {k: v.copy(order="K") for k, v in params.items()}, epoch)
            elif epoch - best[2] >= train.early_stopping:
                break
    return (best[1] if best else params), history
