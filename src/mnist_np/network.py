"""The network of shared/design/network.md: 784 -> H ReLU -> 10 softmax, cross-entropy, hand-written backprop.

Layout: samples are ROWS here (X is m x 784, as stored), so every product of the note appears
transposed (Z1 = X W1 is the note's (W1^T X0)^T); parameter shapes are exactly the note's:
W1 (784, H), b1 (H,), W2 (H, 10), b2 (10,). Gradients come back in a dict with the same keys
and shapes as the parameters.

Every matrix product is one BLAS gemm (or gemv) call through scipy.linalg.blas: the routine
np.dot calls, but with its accumulate form out <- beta out + alpha op(A) op(B) exposed, so a
gradient can be scaled and added to the weights inside the product that computes it (see
train_step). BLAS is Fortran-ordered: an `out` must be Fortran-contiguous (the workspace and
pack() make theirs so), else the wrapper would silently write a copy; _gemm and co. check.

Pure functions, no I/O. Every array keeps the parameters' dtype (float32 by default): scalars
are Python floats or cast to that dtype, so NumPy 2 never promotes to float64 behind our back.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from scipy.linalg import blas

Params = dict[str, np.ndarray]  # keys W1, b1, W2, b2
N_INPUTS = 784
N_CLASSES = 10


def init_params(n_hidden: int, rng: np.random.Generator, scheme: str = "uniform",
                dtype: np.dtype | str = np.float32, n_in: int = N_INPUTS, n_out: int = N_CLASSES) -> Params:
    """Draw initial weights. "uniform" is the design's U[-0.5, 0.5] for weights and biases.

    "he" (ReLU layers) and "glorot" draw weights from U[-r, r] with r = sqrt(6 / fan_in) and
    sqrt(6 / (fan_in + fan_out)) respectively, and start biases at zero.
    """

    def layer(fan_in: int, fan_out: int) -> tuple[np.ndarray, np.ndarray]:
        if scheme == "uniform":
            w = rng.uniform(-0.5, 0.5, size=(fan_in, fan_out))
            b = rng.uniform(-0.5, 0.5, size=fan_out)
        else:
            r = np.sqrt(6.0 / (fan_in if scheme == "he" else fan_in + fan_out))
            w, b = rng.uniform(-r, r, size=(fan_in, fan_out)), np.zeros(fan_out)
        return w.astype(dtype), b.astype(dtype)

    if scheme not in ("uniform", "he", "glorot"):
        raise ValueError(f"unknown init scheme {scheme!r}")
    W1, b1 = layer(n_in, n_hidden)
    W2, b2 = layer(n_hidden, n_out)
    return {"W1": W1, "b1": b1, "W2": W2, "b2": b2}


class Flat(NamedTuple):
    """All parameters (or gradients, or velocities) in one vector, with dict views into it.

    Layout: [W1 stored as (H, n_in), W2 stored as (10, H), b1, b2], so that the (n_in, H) and
    (H, 10) views are Fortran-contiguous, the order BLAS writes. The weight matrices come
    first, so weight decay touches vector[:n_weights] only.
    """

    vector: np.ndarray
    params: Params  # views into vector with the usual keys and shapes
    n_weights: int


def pack(params: Params) -> Flat:
    """Copy params into a fresh Flat."""
    (n_in, hidden), n_out = params["W1"].shape, params["W2"].shape[1]
    sizes = {"W1": n_in * hidden, "W2": hidden * n_out, "b1": hidden, "b2": n_out}
    vector = np.empty(sum(sizes.values()), params["W1"].dtype)
    views, start = {}, 0
    for key, size in sizes.items():
        views[key] = vector[start:start + size]
        start += size
    views["W1"] = views["W1"].reshape(hidden, n_in).T
    views["W2"] = views["W2"].reshape(n_out, hidden).T
    for key, view in views.items():
        view[...] = params[key]
    return Flat(vector, {k: views[k] for k in ("W1", "b1", "W2", "b2")}, sizes["W1"] + sizes["W2"])


def zeros(params: Params) -> Flat:
    """A Flat of zeros shaped like params: room for gradients or velocities."""
    return pack({k: np.zeros_like(v) for k, v in params.items()})


def one_hot(y: np.ndarray, n_classes: int = N_CLASSES, dtype: np.dtype | str = np.float32) -> np.ndarray:
    """Integer labels (m,) -> the design's one-hot Y, as rows (m, n_classes)."""
    return np.eye(n_classes, dtype=dtype)[y]


def _refuse(out: np.ndarray, dtype: np.dtype) -> None:
    raise ValueError(f"BLAS output must be a Fortran-contiguous {dtype} array: got {out.dtype}, "
                     f"Fortran-contiguous={out.flags.f_contiguous}")


# The three BLAS calls, with every argument positional: f2py parses keywords about 0.7 us
# slower per call, 10% of a training step at H=10. Each checks that BLAS wrote into `out`
# itself (the wrapper silently writes a copy of an `out` it cannot use).

def _gemm(gemm, alpha: float, a: np.ndarray, b: np.ndarray, beta: float = 0.0, out: np.ndarray | None = None,
          trans_a: int = 0, trans_b: int = 0) -> np.ndarray:
    """out <- beta out + alpha op(a) op(b), op = transpose where asked; a new array when out is None."""
    result = gemm(alpha, a, b, beta, out, trans_a, trans_b, 1)
    if out is not None and result is not out:
        _refuse(out, result.dtype)
    return result


def _column_sums(gemv, alpha: float, a: np.ndarray, ones: np.ndarray, beta: float, out: np.ndarray) -> None:
    """out <- beta out + alpha a^T 1: the sums of a's columns, as one product (gemv)."""
    if gemv(alpha, a, ones, beta, out, 0, 1, 0, 1, 1, 1) is not out:
        _refuse(out, a.dtype)


def _axpy(axpy, alpha: float, x: np.ndarray, out: np.ndarray) -> None:
    """out <- out + alpha x, on all BLAS threads."""
    if axpy(x, out, len(x), alpha) is not out:
        _refuse(out, x.dtype)


class Workspace:
    """Preallocated arrays for forward and backward passes of exactly `batch` samples.

    Training reuses a workspace for every batch, so the hot loop allocates nothing. The arrays
    of a Forward and the gradients returned with a workspace are views into it, valid until the
    next step. All are Fortran-ordered (m, units), as BLAS writes them: in memory that is the
    note's (units x m) layout, one row per unit, which also suits OpenBLAS's hidden-layer
    products best (30% faster than the transposed order at H=1024, measured).
    """

    def __init__(self, params: Params, batch: int) -> None:
        hidden, n_out, dtype = params["W2"].shape[0], params["W2"].shape[1], params["W1"].dtype
        self.params = params  # only for the gradient arrays' shapes
        self.A1, self.E1 = np.empty((batch, hidden), dtype, "F"), np.empty((batch, hidden), dtype, "F")
        self.active = np.empty((batch, hidden), bool, "F")
        self.Z2, self.P, self.E2 = (np.empty((batch, n_out), dtype, "F") for _ in range(3))
        self.total = np.empty((batch, 1), dtype)
        self.ones = np.ones(batch, dtype)  # bias gradients are sums over the batch: E^T 1
        self.gemm, self.gemv, self.axpy = blas.get_blas_funcs(("gemm", "gemv", "axpy"), dtype=dtype)

    @functools.cached_property
    def grads(self) -> Flat:
        """Where backward writes gradients by default; made on first use (train_step needs none)."""
        return zeros(self.params)


class Forward(NamedTuple):
    """What backprop needs from the forward pass (m = batch size)."""

    A1: np.ndarray  # (m, H) ReLU(Z1); [Z1 > 0] is [A1 > 0], so Z1 itself is not kept
    P: np.ndarray  # (m, 10) softmax probabilities
    shifted: np.ndarray  # (m, 10) Z2 - max over classes
    total: np.ndarray  # (m,) sum_j exp(shifted_j); ln p_y = shifted_y - ln total, finite for finite logits


def softmax(z: np.ndarray, out: np.ndarray | None = None,
            total: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise stable softmax of logits z (m, k), shifting z IN PLACE: returns (P, shifted z, totals (m,)).

    Subtracting the row maximum keeps exp() <= 1, so it never overflows, and the maximum's own
    term is 1, so the total is >= 1 and its log is finite. `total` (m, 1) holds the maximum first.
    """
    total = np.maximum.reduce(z, axis=1, out=total, keepdims=True)
    z -= total
    p = np.exp(z, out=out)
    np.add.reduce(p, axis=1, out=total, keepdims=True)
    p /= total
    return p, z, total[:, 0]


def forward(params: Params, X: np.ndarray, ws: Workspace | None = None,
            logits: np.ndarray | None = None, total: np.ndarray | None = None) -> Forward:
    """X (m, 784) -> cached activations (design steps 1-2).

    The shifted logits go to `logits` (m, 10, Fortran order) and the softmax sums to `total`
    (m, 1) when given (training keeps them for the epoch's statistics), else into the
    workspace; without a workspace, fresh arrays are allocated (only those a forward pass needs).
    """
    if ws is not None:
        logits = ws.Z2 if logits is None else logits
        total = ws.total if total is None else total
    gemm = ws.gemm if ws is not None else blas.get_blas_funcs("gemm", dtype=params["W1"].dtype)
    # Step 1: Z1 = X W1 (X.T is the C-ordered X as the Fortran array BLAS reads), + b1, ReLU in place.
    A1 = _gemm(gemm, 1.0, X.T, params["W1"], 0.0, None if ws is None else ws.A1, trans_a=1)
    A1 += params["b1"]
    np.maximum(A1, 0, out=A1)  # Z1 becomes X1, the note's hidden output
    # Step 2: Z2 = X1 W2 + b2, then the softmax.
    Z2 = _gemm(gemm, 1.0, A1, params["W2"], 0.0, logits)
    Z2 += params["b2"]
    P, shifted, sums = softmax(Z2, out=None if ws is None else ws.P, total=total)
    return Forward(A1, P, shifted, sums)


def log_likelihoods(fwd: Forward, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """ln p_y per sample, from the shifted logits: never -inf for finite logits."""
    return np.subtract(fwd.shifted[np.arange(len(y)), y], np.log(fwd.total), out=out)


def cross_entropy(fwd: Forward, y: np.ndarray) -> float:
    """Mean over the batch of -ln p_y."""
    return -float(np.mean(log_likelihoods(fwd, y)))


def backward(params: Params, X: np.ndarray, Y: np.ndarray, fwd: Forward, ws: Workspace | None = None,
             alpha: float = 1.0, into: Params | None = None, beta: float = 0.0,
             beta_bias: float | None = None) -> Params:
    """Gradients of the batch's mean cross-entropy (design steps 3-6), accumulated as BLAS does:
    into[k] <- beta * into[k] + alpha * dL/dk for each parameter k (beta_bias, default beta, for
    the biases). Returns `into`: by default the workspace's gradient arrays with alpha 1, beta 0,
    i.e. the gradients themselves. Y is the one-hot labels as rows (m, 10).

    `into` may be `params` itself (every parameter is read before any is written): that is how
    train_step updates the weights inside the products. Its arrays must be pack()'s views.
    """
    m = X.shape[0]
    ws = ws or Workspace(params, m)
    into = ws.grads.params if into is None else into
    beta_bias = beta if beta_bias is None else beta_bias
    scale = alpha / m  # the 1/m of the batch mean, folded into the products' alpha
    # Step 3: for softmax followed by cross-entropy, dL/dZ2 = P - Y; no softmax Jacobian needed.
    # (E2 is (m x 10); E2.T is the note's 10 x m E2.)
    E2 = np.subtract(fwd.P, Y, out=ws.E2)
    # Step 5 before 4, as W2 must be read before `into` may change it:
    # E1 = E2 W2^T * [Z1 > 0] (m x H), the transpose of the note's (W2 E2) * [Z1 > 0].
    E1 = _gemm(ws.gemm, 1.0, E2, params["W2"], 0.0, ws.E1, trans_b=1)
    E1 *= np.greater(fwd.A1, 0, out=ws.active)
    # Step 4: dW2 = X1^T E2 (H x 10); db2 = E2^T 1, the sums over the batch: a product with
    # ones is 4x faster than a sum over the batch axis at H=1024.
    _gemm(ws.gemm, scale, fwd.A1, E2, beta, into["W2"], trans_a=1)
    _column_sums(ws.gemv, scale, E2, ws.ones, beta_bias, into["b2"])
    # Step 6: dW1 = X^T E1 (784 x H); db1 = E1^T 1.
    _gemm(ws.gemm, scale, X.T, E1, beta, into["W1"])
    _column_sums(ws.gemv, scale, E1, ws.ones, beta_bias, into["b1"])
    return into


def loss_and_grads(params: Params, X: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
    fwd = forward(params, X)
    return cross_entropy(fwd, y), backward(params, X, one_hot(y, params["W2"].shape[1], X.dtype), fwd)


def update(w: np.ndarray, step: np.ndarray, momentum: float = 0.0, velocity: np.ndarray | None = None) -> None:
    """Step 7 in place: w <- w - step; with `velocity`, classical momentum v <- momentum v - step, w <- w + v."""
    if velocity is None:
        w -= step
    else:
        velocity *= velocity.dtype.type(momentum)  # keep float32 math in float32
        velocity -= step
        w += velocity


def sgd_step(params: Params, grads: Params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
             velocity: Params | None = None) -> None:
    """w <- w - lr * (dw + weight_decay * w) for each array, in place; `grads` is overwritten.

    The reference form of step 7 (train_step does the same inside the products). L2 weight
    decay is the derivative of (weight_decay/2)*||W||^2 and applies to the weight matrices
    only, not the biases. `velocity` (zeros shaped like params) adds momentum.
    """
    for key, step in grads.items():
        w = params[key]
        step *= w.dtype.type(lr)
        if weight_decay and key.startswith("W"):
            step += w.dtype.type(lr * weight_decay) * w
        update(w, step, momentum, None if velocity is None else velocity[key])


def train_step(flat: Flat, X: np.ndarray, Y: np.ndarray, ws: Workspace, lr: float, momentum: float = 0.0,
               decay: float = 0.0, velocity: Flat | None = None, logits: np.ndarray | None = None,
               total: np.ndarray | None = None) -> Forward:
    """One step of gradient descent on a batch (design steps 1-7), in place on the packed
    parameters; decay = lr * weight_decay. Returns the batch's forward pass.

    Same update as sgd_step, without writing a gradient array: without momentum,
    w <- (1 - decay) w - lr dw is the products' own accumulate (beta = 1 - decay); with
    momentum, v <- momentum v - lr dw is, and v <- v - decay w, w <- w + v follow as BLAS axpy
    calls over whole vectors, which OpenBLAS spreads over its threads.
    """
    params = flat.params
    fwd = forward(params, X, ws, logits, total)
    if velocity is None:
        backward(params, X, Y, fwd, ws, alpha=-lr, into=params, beta=1.0 - decay, beta_bias=1.0)
    else:
        backward(params, X, Y, fwd, ws, alpha=-lr, into=velocity.params, beta=momentum)
        if decay:
            _axpy(ws.axpy, -decay, flat.vector[:flat.n_weights], velocity.vector[:flat.n_weights])
        _axpy(ws.axpy, 1.0, velocity.vector, flat.vector)
    return fwd


def loss_and_accuracy(params: Params, X: np.ndarray, y: np.ndarray, chunk: int = 10_000) -> tuple[float, float, np.ndarray]:
    """Mean cross-entropy, accuracy and predicted labels over a whole split."""
    total, preds = 0.0, []
    for i in range(0, len(X), chunk):
        fwd = forward(params, X[i:i + chunk])
        total += cross_entropy(fwd, y[i:i + chunk]) * len(fwd.P)
        preds.append(fwd.P.argmax(axis=1))
    pred = np.concatenate(preds)
    return total / len(X), float(np.mean(pred == y)), pred
