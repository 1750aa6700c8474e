"""The training loop: shuffled mini-batch gradient descent with per-epoch statistics.

No I/O and no tracking here: the caller gets each epoch's numbers through `on_epoch`
(the train stage logs them to MLflow and CSV) and the final weights as the return value.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import psutil
from threadpoolctl import ThreadpoolController
from tqdm.auto import tqdm

from ..config import ModelConfig, TrainConfig
from ..errors import ConfigError, TrainingError
from ..model import kernel, reference
from . import augment, cores


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's batches, as the weights moved (no extra pass)
    train_accuracy: float
    val_loss: float  # after the epoch's last step
    val_accuracy: float
    seconds: float  # wall time of the epoch's gradient steps


@dataclass(frozen=True)
class Fit:
    params: reference.Params  # the kept weights: the last epoch's, or the best with early stopping
    history: list[EpochStats]
    kept: EpochStats  # the epoch whose weights were kept


class EpochOutputs:
    """Where every batch's forward pass leaves its shifted logits and softmax sums for a whole epoch.

    Batch k (samples start..start+m of the epoch's order) gets views shaped as the workspace's:
    logits (m, 10) in Fortran order, sums (m, 1). The epoch's training loss and accuracy then come
    from one pass over them at the end, instead of a handful of small NumPy calls per batch.
    """

    def __init__(self, n: int, batch: int, n_out: int, dtype: np.dtype) -> None:
        self.n, self.batch, self.n_out = n, batch, n_out
        self.logits, self.sums = np.empty(n * n_out, dtype), np.empty(n, dtype)
        self.views = []
        for start in range(0, n, batch):
            m = min(batch, n - start)
            self.views.append(
                (
                    self.logits[start * n_out : (start + m) * n_out].reshape(n_out, m).T,
                    self.sums[start : start + m].reshape(m, 1),
                )
            )

    def statistics(self, labels: np.ndarray) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of the epoch, `labels` in the epoch's sample order."""
        full = self.n // self.batch * self.batch
        # The logits back as (n, 10) rows in sample order. Batch k's block in memory is its (m, 10)
        # view in Fortran order, i.e. 10 runs of m values, one per output: for the full batches that
        # is an array (batches, 10, batch), transposed to (batches, batch, 10) and flattened to rows;
        # the short last batch is one (10, m) block, transposed.
        shifted = np.concatenate(
            [
                self.logits[: full * self.n_out]
                .reshape(-1, self.n_out, self.batch)
                .transpose(0, 2, 1)
                .reshape(-1, self.n_out),
                self.logits[full * self.n_out :].reshape(self.n_out, -1).T,
            ]
        )
        likelihood = kernel.log_likelihoods(shifted, self.sums[:, None], labels)
        return -float(likelihood.mean(dtype=np.float64)), float(np.mean(shifted.argmax(axis=1) == labels))


VALIDATION_CHUNK = 1000  # validation images scored at once


class Validation:
    """Loss and accuracy on the validation split after each epoch, with the kernel's forward pass
    (the reference's NumPy products would run on a second BLAS library, whose idle threads
    spin against the kernel's), `chunk` images at a time in reused workspaces."""

    def __init__(self, x: np.ndarray, y: np.ndarray, params: reference.Params, chunk: int = VALIDATION_CHUNK) -> None:
        self.x, self.y, self.chunk = np.ascontiguousarray(x), y, chunk
        self.workspaces = {m: kernel.Workspace(params, m) for m in {min(chunk, len(x)), len(x) % chunk} if m}

    def score(self, params: reference.Params) -> tuple[float, float]:
        log_likelihood, correct = 0.0, 0
        for i in range(0, len(self.x), self.chunk):
            x, y = self.x[i : i + self.chunk], self.y[i : i + self.chunk]
            fwd = kernel.forward(params, x, self.workspaces[len(x)])
            log_likelihood += float(kernel.log_likelihoods(fwd.shifted, fwd.sums, y).sum(dtype=np.float64))
            correct += int(np.count_nonzero(fwd.shifted.argmax(axis=1) == y))
        return -log_likelihood / len(self.x), correct / len(self.x)


CHUNK_ROWS = 2048  # rows gathered at once, see shuffled_batches


def chunk_size(batch: int, chunk_rows: int = CHUNK_ROWS) -> int:
    """Rows per gathered chunk: whole batches, so only the epoch's last batch is short."""
    return batch * max(1, chunk_rows // batch)


def shuffled_batches(
    arrays: tuple[np.ndarray, ...],
    order: np.ndarray,
    batch: int,
    chunk_rows: int = CHUNK_ROWS,
    first_rows: Callable[[list[np.ndarray]], Iterator[np.ndarray]] | None = None,
) -> Iterator[tuple[np.ndarray, ...]]:
    """Yield, batch by batch in `order`, contiguous views of the batch's rows of each array.

    Rows are gathered about `chunk_rows` at a time into one of two buffers (6 MB each for
    MNIST images), the next chunk in a background thread while the caller trains on the current
    one. NumPy releases the GIL while it copies, so the gather's random reads from the training
    set overlap with the arithmetic instead of adding to it.
    No shuffled copy of the whole training set is made: that would double its memory.
    A view is valid until the caller asks for the next batch.
    `first_rows`, if given, supplies the first array's rows instead: called with the epoch's
    index chunks, it returns an iterator of their rows (the distorted images, augment.Worker).
    """
    rows = chunk_size(batch, chunk_rows)
    buffers = [[np.empty((min(rows, len(order)), *a.shape[1:]), a.dtype) for a in arrays] for _ in range(2)]
    supplied = first_rows([order[i : i + rows] for i in range(0, len(order), rows)]) if first_rows else None

    def gather(start: int, into: list[np.ndarray]) -> int:
        index = order[start : start + rows]
        for i, (array, buffer) in enumerate(zip(arrays, into)):
            if i == 0 and supplied is not None:
                buffer[: len(index)] = next(supplied)
            else:
                # mode="clip": the indices come from a permutation, so they need no bounds check,
                # and the default mode="raise" would copy through an extra buffer.
                array.take(index, axis=0, out=buffer[: len(index)], mode="clip")
        return len(index)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(gather, 0, buffers[0])
        for k, start in enumerate(range(0, len(order), rows)):
            filled, current = pending.result(), buffers[k % 2]
            if start + rows < len(order):
                pending = pool.submit(gather, start + rows, buffers[(k + 1) % 2])
            for i in range(0, filled, batch):
                yield tuple(buffer[i : min(i + batch, filled)] for buffer in current)


@contextlib.contextmanager
def switch_interval(seconds: float = 1e-3) -> Iterator[None]:
    """Let waiting threads take the GIL after `seconds` instead of Python's default 5 ms.

    The BLAS wrappers (scipy.linalg.blas) keep the GIL while they compute, so the thread that
    gathers the next batches (shuffled_batches) would otherwise wait up to 5 ms each time it
    needs the GIL, and fall behind (docs/performance.md has the figures). 1 ms lets it in
    between two products.
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


SINGLE_BLAS_THREAD_BELOW = 128 * 128  # hidden units x batch size, see blas_threads


def blas_threads(hidden: int, batch: int, share: int, numerics: str = "native") -> int:
    """BLAS threads for training `hidden` units on batches of `batch` on `share` cores: 1 for
    small products or portable numerics (OpenBLAS sums differently on 1 and 2 threads), else the
    whole share.

    The big products of a step are (batch x 784) by (784 x hidden), so their size goes with
    hidden x batch. Small ones gain nothing from a second core, and idle BLAS threads spin on
    it; with one BLAS thread that core gathers the next batches instead (see shuffled_batches).
    The threshold was measured on 2 cores (docs/performance.md). The share is this job's part of
    the machine while other training jobs run beside it (cores.Share).
    """
    return 1 if hidden * batch < SINGLE_BLAS_THREAD_BELOW or numerics == "portable" else share


class Progress(tqdm):
    """tqdm's bar, shown on a terminal only (tqdm's own rule for disable=None), whose clean-up survives
    a Ctrl-C or SIGTERM that lands while the bar is being made: tqdm's __del__ then fails on the
    half-made bar and prints a traceback after the run's one error line."""

    def __init__(self, *args, show: bool = True, **kwargs) -> None:
        super().__init__(*args, disable=None if show else True, **kwargs)

    def __del__(self) -> None:
        if hasattr(self, "pos"):
            super().__del__()


CHANCE_LOSS = float(np.log(reference.N_CLASSES))  # cross-entropy of a uniform guess


def check_feasible(model: ModelConfig, train: TrainConfig, n_train: int, n_pixels: int) -> None:
    """Refuse settings that cannot do what was meant on `n_train` training images of `n_pixels`,
    or that need more memory than the machine has available, before anything is allocated."""
    if train.batch_size > n_train:
        raise ConfigError(
            f"train.batch_size={train.batch_size} is larger than the {n_train} training images; "
            f"choose at most {n_train}"
        )
    if train.augment.enabled and not augment.image_side(n_pixels):
        raise ConfigError(
            f"train.augment.enabled=true needs square images, but the inputs have {n_pixels} pixels; "
            "set train.augment.enabled=false"
        )
    needed, available = memory_needed(model.hidden_size, train, n_train, n_pixels), psutil.virtual_memory().available
    if needed > available:
        raise ConfigError(
            f"model.hidden_size={model.hidden_size} needs about {needed / 2**30:.1f} GiB of memory to train "
            f"(weights, gradients, momentum, workspaces), more than the {available / 2**30:.1f} GiB this "
            "machine has available; choose a smaller model.hidden_size"
        )


def memory_needed(hidden: int, train: TrainConfig, n_train: int, n_pixels: int) -> int:
    """Bytes fit() allocates beyond the data it is given, from above: the initialisation's float64
    draws, then in the training dtype their cast, the packed weights, gradients, momentum and the
    best epoch's copy; the workspaces of a full and a last batch and of a validation chunk (two
    hidden arrays and a mask each); the one-hot labels and the epoch's logits; a copy of the inputs
    when the training dtype is not their float32."""
    item = np.dtype(train.dtype).itemsize
    n_params = (n_pixels + 1) * hidden + (hidden + 1) * reference.N_CLASSES
    workspaces = (2 * train.batch_size + VALIDATION_CHUNK) * hidden * (2 * item + 1)
    per_row = 2 * reference.N_CLASSES * item + (n_pixels * item if item != 4 else 0)
    return n_params * (8 + 5 * item) + workspaces + n_train * per_row


def check_converging(stats: EpochStats, train: TrainConfig) -> None:
    """Divergence is a failure, not a result: a loss ten times a uniform guess's while accuracy
    stays near chance means the steps overshoot (NaN weights are caught before)."""
    if stats.train_loss > 10 * CHANCE_LOSS and stats.train_accuracy < 2 / reference.N_CLASSES:
        raise TrainingError(
            f"training diverged in epoch {stats.epoch}: train loss {stats.train_loss:.4g} (a uniform "
            f"guess scores {CHANCE_LOSS:.2f}), accuracy {stats.train_accuracy:.1%}, with "
            f"train.lr={train.lr}; lower train.lr (or standardize the data)"
        )


def fit(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    model: ModelConfig,
    train: TrainConfig,
    on_epoch: Callable[[EpochStats], None] | None = None,
    progress: bool = True,
) -> Fit:
    """Train a fresh network; same data, configs and seed give bit-identical weights.

    The inputs are never modified. With train.early_stopping > 0 the weights of the best
    validation epoch (the latest of equals) are kept.
    """
    check_feasible(model, train, len(y_train), x_train.shape[1])
    dtype = np.dtype(train.dtype)
    x, y = x_train.astype(dtype, copy=False), y_train
    x_val = x_val.astype(dtype, copy=False)
    # Independent streams for initialisation, batch order and distortions, all from the one seed
    # (the first two are the same whether or not the third is used).
    init_rng, order_rng, augment_rng = np.random.default_rng(train.seed).spawn(3)
    flat = kernel.pack(reference.init_params(model.hidden_size, init_rng, model.init, dtype, n_in=x.shape[1]))
    params = flat.params
    velocity = kernel.zeros(params) if train.momentum else None
    n, history = len(x), []
    one_hot = kernel.one_hot_rows(y, reference.N_CLASSES, dtype)
    outputs = EpochOutputs(n, train.batch_size, reference.N_CLASSES, dtype)
    # One workspace for full batches and one for a shorter last batch.
    workspaces = {m: kernel.Workspace(params, m) for m in {train.batch_size, n % train.batch_size} if m}
    validation = Validation(x_val, y_val, params)
    # Distorted copies of the images, made in a worker process while the steps run; blank pixels
    # are the darkest, in whatever scaling the data has.
    distorted = (
        augment.Worker(x, train.augment, float(x.min()), augment_rng, min(n, chunk_size(train.batch_size)))
        if train.augment.enabled
        else contextlib.nullcontext(None)
    )
    kept: tuple[EpochStats, reference.Params] | None = None

    blas = ThreadpoolController()

    def threads() -> int:  # this job's cores while other training jobs run beside it
        return blas_threads(model.hidden_size, train.batch_size, share.take(), train.numerics)

    # The outer limit restores the BLAS thread counts when training ends.
    with (
        distorted as first_rows,
        cores.share() as share,
        switch_interval(),
        blas.limit(limits=threads(), user_api="blas"),
    ):
        for epoch in range(1, train.epochs + 1):
            if epoch > 1:  # each epoch takes this job's share of the cores as it is now
                blas.limit(limits=threads(), user_api="blas")
            start = time.perf_counter()
            lr = train.lr * train.lr_decay ** (epoch - 1)
            order = order_rng.permutation(n)
            batches = Progress(
                shuffled_batches((x, one_hot), order, train.batch_size, first_rows=first_rows),
                total=len(outputs.views),
                desc=f"epoch {epoch}/{train.epochs}",
                unit="batch",
                show=progress,
                leave=False,
                mininterval=1.0,
            )
            for (xb, Yb), (logits, sums) in zip(batches, outputs.views):
                ws = workspaces[len(xb)]
                ws.Z2, ws.sums = logits, sums  # the forward pass leaves them in the epoch's buffers
                kernel.fused_step(flat, xb, Yb, ws, lr, train.momentum, train.weight_decay, velocity)
            seconds = time.perf_counter() - start

            if not np.isfinite(flat.vector).all():
                raise TrainingError(
                    f"weights became non-finite in epoch {epoch} with train.lr={train.lr}; "
                    "lower train.lr (or standardize the data) and run again"
                )
            val_loss, val_acc = validation.score(params)
            train_loss, train_acc = outputs.statistics(y[order])
            stats = EpochStats(epoch, train_loss, train_acc, val_loss, val_acc, seconds)
            history.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
            check_converging(stats, train)
            if not train.early_stopping:
                continue
            # Ties go to the later epoch: 5,000 validation images move in steps of 0.02%, so
            # plateaus are common, and with a decaying learning rate the later weights have settled more.
            if kept is None or val_acc >= kept[0].val_accuracy:
                kept = (stats, {k: v.copy(order="K") for k, v in params.items()})
            elif epoch - kept[0].epoch >= train.early_stopping:
                break
    if kept is None:
        kept = (history[-1], params)
    return Fit(kept[1], history, kept[0])
