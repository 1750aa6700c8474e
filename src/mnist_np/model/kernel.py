"""The training kernel: reference.py's steps 1-7 fused into BLAS calls, for speed.

Same math as reference.py (tests/test_kernel.py holds it to the reference within 1e-10 over
hundreds of float64 steps), arranged for speed:
- every product is one BLAS gemm/gemv through scipy.linalg.blas, the routine np.dot calls, with
  its accumulate form out <- beta out + scale op(A) op(B) exposed, so the SGD step rides inside
  the gradient product (fused_step) and no gradient array is written and read back. BLAS calls that
  factor alpha; here it is `scale`, since alpha is the learning rate in the note and reference.py;
- preallocated workspaces, so a training step allocates nothing;
- all parameters in one vector (Flat), so momentum and weight decay are single BLAS axpy calls.

Layout: samples are rows (X is m x 784, as stored), so products appear transposed against the
note (Z1 = X W1 is the note's (W1^T X0)^T). Every array has the shape its name has in this
transposed form; its order in memory is a speed choice that `_product` turns into the BLAS call:
- the output arrays (m, 10) are Fortran-ordered as BLAS writes them, the note's (10 x m) columns;
- the hidden arrays (m, H) and W1 (784, H) are Fortran-ordered too for H >= 64, C-ordered for
  smaller H (`hidden_order`): OpenBLAS's Haswell kernels run each ordering's products faster on
  its side of that line (docs/performance.md). The order sets which product BLAS computes (Z1 or
  Z1^T), hence the summation order: it is a function of H alone, so a seed's bits still are.
Every array keeps the parameters' dtype: scalars are Python floats, so NumPy 2 never promotes
float32 to float64.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.linalg import blas

from .reference import Params

# Below this many hidden units the hidden arrays and W1 are C-ordered: at H = 10 a training step
# (batch 32) is 15% faster so, at H = 1024-2048 4-30% slower (docs/performance.md).
ROW_ORDER_BELOW = 64


def hidden_order(hidden: int) -> str:
    """The memory order of W1 and the (m, H) arrays for `hidden` units: "C" or "F"."""
    return "C" if hidden < ROW_ORDER_BELOW else "F"


class Flat(NamedTuple):
    """All parameters (or velocities) in one vector, with dict views into it.

    Layout: [W1 (n_in, H) in hidden_order(H), W2 (H, 10) Fortran-ordered, b1, b2], so weight decay
    touches vector[:n_weights] only.
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
        views[key] = vector[start : start + size]
        start += size
    views["W1"] = views["W1"].reshape((n_in, hidden), order=hidden_order(hidden))
    views["W2"] = views["W2"].reshape((hidden, n_out), order="F")
    for key, view in views.items():
        view[...] = params[key]
    return Flat(vector, {k: views[k] for k in ("W1", "b1", "W2", "b2")}, sizes["W1"] + sizes["W2"])


def zeros(params: Params) -> Flat:
    """A Flat of zeros shaped like params: room for velocities."""
    return pack({k: np.zeros_like(v) for k, v in params.items()})


def one_hot_rows(y: np.ndarray, n_classes: int, dtype) -> np.ndarray:
    """Integer labels (m,) -> one-hot rows (m, n_classes): the note's Y, transposed."""
    return np.eye(n_classes, dtype=dtype)[y]


# The BLAS calls, every argument positional (f2py parses keywords more slowly, which shows at
# hidden 10; docs/performance.md). Each checks that BLAS wrote into `out` itself: the wrapper silently writes
# a copy of an `out` it cannot use (wrong dtype or not contiguous).


def _refuse(out: np.ndarray, dtype: np.dtype) -> None:
    raise ValueError(
        f"BLAS output must be a contiguous {dtype} array: got {out.dtype}, "
        f"C-contiguous={out.flags.c_contiguous}, Fortran-contiguous={out.flags.f_contiguous}"
    )


def _blas_operand(a: np.ndarray) -> tuple[np.ndarray, int]:
    """a as BLAS reads it, a Fortran-ordered array and whether to transpose it: a C-ordered a is
    its transpose in Fortran order, which BLAS transposes back."""
    return (a, 0) if a.flags.f_contiguous else (a.T, 1)


def _product(gemm, scale: float, a, b, beta: float, out) -> np.ndarray:
    """out <- beta out + scale a b, for operands and out of either memory order. BLAS writes only
    Fortran order, so a C-ordered out is filled as out^T <- beta out^T + scale b^T a^T."""
    if out.flags.f_contiguous:
        (a, trans_a), (b, trans_b), target = _blas_operand(a), _blas_operand(b), out
    else:
        (a, trans_a), (b, trans_b), target = _blas_operand(b.T), _blas_operand(a.T), out.T
    if gemm(scale, a, b, beta, target, trans_a, trans_b, 1) is not target:
        _refuse(out, a.dtype)
    return out


def _column_sums(gemv, scale: float, a, ones, beta: float, out) -> None:
    """out <- beta out + scale a^T 1: the sums of a's columns as one product."""
    a, trans = (a, 1) if a.flags.f_contiguous else (a.T, 0)
    if gemv(scale, a, ones, beta, out, 0, 1, 0, 1, trans, 1) is not out:
        _refuse(out, a.dtype)


def _axpy(axpy, scale: float, x, out) -> None:
    """out <- out + scale x, on all BLAS threads."""
    if axpy(x, out, len(x), scale) is not out:
        _refuse(out, x.dtype)


class Workspace:
    """Preallocated (m, units) arrays for a forward and backward pass of exactly `batch` samples.

    `Z2` (the shifted logits, Fortran order) and `sums` (m, 1) are where the forward pass leaves what
    the loss needs; a caller may point them at other arrays of the same shape and order, as the
    training loop does to keep every batch's for the epoch's statistics without a copy."""

    def __init__(self, params: Params, batch: int) -> None:
        hidden, n_out, dtype = params["W2"].shape[0], params["W2"].shape[1], params["W1"].dtype
        order = hidden_order(hidden)
        self.X1, self.E1 = np.empty((batch, hidden), dtype, order), np.empty((batch, hidden), dtype, order)
        self.active = np.empty((batch, hidden), bool, order)
        self.Z2, self.P, self.E2 = (np.empty((batch, n_out), dtype, "F") for _ in range(3))
        self.sums = np.empty((batch, 1), dtype)
        self.ones = np.ones(batch, dtype)  # bias gradients are sums over the batch: E^T 1
        self.gemm, self.gemv, self.axpy = blas.get_blas_funcs(("gemm", "gemv", "axpy"), dtype=dtype)


class Forward(NamedTuple):
    """The forward pass of a batch, as rows (m = batch size); views into a workspace."""

    X1: np.ndarray  # (m, H) ReLU(Z1); [Z1 > 0] is [X1 > 0], so Z1 itself is not kept
    P: np.ndarray  # (m, 10) softmax probabilities
    shifted: np.ndarray  # (m, 10) Z2 minus each row's maximum
    sums: np.ndarray  # (m, 1) sum_j exp(shifted_j), >= 1: ln p_y = shifted_y - ln sums


def forward(params: Params, X: np.ndarray, ws: Workspace) -> Forward:
    """Design steps 1-2 for X (m, 784), into the workspace; the shifted logits and softmax sums
    land in ws.Z2 and ws.sums."""
    sums = ws.sums
    # Step 1.
    X1 = _product(ws.gemm, 1.0, X, params["W1"], 0.0, ws.X1)
    X1 += params["b1"]
    np.maximum(X1, 0, out=X1)
    # Step 2, then a stable softmax along each row, in place.
    Z2 = _product(ws.gemm, 1.0, X1, params["W2"], 0.0, ws.Z2)
    Z2 += params["b2"]
    np.maximum.reduce(Z2, axis=1, out=sums, keepdims=True)
    Z2 -= sums
    P = np.exp(Z2, out=ws.P)
    np.add.reduce(P, axis=1, out=sums, keepdims=True)
    P /= sums
    return Forward(X1, P, Z2, sums)


def log_likelihoods(shifted: np.ndarray, sums: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ln p_y per sample from forward's shifted logits (m, 10) and sums (m, 1)."""
    return shifted[np.arange(len(y)), y] - np.log(sums[:, 0])


def accumulate_gradients(
    params: Params, X, Y, fwd: Forward, ws: Workspace, scale: float, into: Params, beta: float, beta_bias: float
) -> None:
    """Design steps 3-6, accumulated as BLAS does: into[k] <- beta into[k] + scale dL/dk
    (beta_bias for the biases). Y is one-hot rows (m, 10); `into` holds Flat views. A gradient
    step is scale = -lr (fused_step).

    `into` may be `params` itself: W2 is read (step 5) before anything is written.
    """
    scale /= X.shape[0]  # the batch mean's 1/m, folded into the products' scale
    E2 = np.subtract(fwd.P, Y, out=ws.E2)  # step 3
    # Step 5 before 4: E1 = E2 W2^T * [Z1 > 0], the transpose of the note's (W2 E2) * [Z1 > 0].
    E1 = _product(ws.gemm, 1.0, E2, params["W2"].T, 0.0, ws.E1)
    E1 *= np.greater(fwd.X1, 0, out=ws.active)
    # Step 4: dW2 = X1^T E2; db2 = E2^T 1 (a product with ones beats a sum over the batch axis).
    _product(ws.gemm, scale, fwd.X1.T, E2, beta, into["W2"])
    _column_sums(ws.gemv, scale, E2, ws.ones, beta_bias, into["b2"])
    # Step 6: dW1 = X^T E1; db1 = E1^T 1.
    _product(ws.gemm, scale, X.T, E1, beta, into["W1"])
    _column_sums(ws.gemv, scale, E1, ws.ones, beta_bias, into["b1"])


def fused_step(
    flat: Flat,
    X,
    Y,
    ws: Workspace,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    velocity: Flat | None = None,
) -> Forward:
    """Design steps 1-7 on one batch, in place on the packed parameters: reference.update after
    reference.backward, without a gradient array. Returns the batch's forward pass.

    Without momentum, w <- (1 - lr weight_decay) w - lr dw is the products' own accumulate.
    With momentum, v <- momentum v - lr dw is, then v <- v - lr weight_decay w and w <- w + v
    are axpy calls over whole vectors.
    """
    params, decay = flat.params, lr * weight_decay
    fwd = forward(params, X, ws)
    if velocity is None:
        accumulate_gradients(params, X, Y, fwd, ws, -lr, params, 1.0 - decay, 1.0)
    else:
        accumulate_gradients(params, X, Y, fwd, ws, -lr, velocity.params, momentum, momentum)
        if decay:
            _axpy(ws.axpy, -decay, flat.vector[: flat.n_weights], velocity.vector[: flat.n_weights])
        _axpy(ws.axpy, 1.0, velocity.vector, flat.vector)
    return fwd
