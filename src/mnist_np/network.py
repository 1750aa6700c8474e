"""The network of shared/design/network.md: 784 -> H ReLU -> 10 softmax, cross-entropy, hand-written backprop.

Indexing differs from the design note in one way: samples are ROWS here (X is m x 784), so the
note's column-form z = W^T x becomes Z = X @ W + b, and every product below is the transpose of
the note's. Parameter shapes are exactly the note's: W1 (784, H), b1 (H,), W2 (H, 10), b2 (10,).
Gradients come back in a dict with the same keys and shapes as the parameters.

Pure functions, no I/O. Every array keeps the parameters' dtype (float32 by default): scalars
are Python floats or cast to that dtype, so NumPy 2 never promotes to float64 behind our back.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

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
    W1 = np.asfortranarray(W1)  # the memory order backward() writes dW1 in (see Workspace)
    W2, b2 = layer(n_hidden, n_out)
    return {"W1": W1, "b1": b1, "W2": W2, "b2": b2}


class Workspace:
    """Preallocated arrays for forward and backward passes of up to `batch` samples.

    Training reuses one workspace for every batch, so the hot loop allocates nothing: fresh
    large arrays cost page faults and zeroing on every step. The arrays of a Forward and of the
    gradients returned with a workspace are views into it, valid until the next step.
    dW1 is computed as (E1^T X)^T into an (H, n_in) buffer: the same numbers, in the memory
    order BLAS produces fastest (W1 is kept in that Fortran order too, see init_params).
    """

    def __init__(self, params: Params, batch: int) -> None:
        n_in, hidden = params["W1"].shape
        n_out, dtype = params["W2"].shape[1], params["W1"].dtype
        self.A1, self.E1 = np.empty((batch, hidden), dtype), np.empty((batch, hidden), dtype)
        self.active = np.empty((batch, hidden), bool)
        self.Z2, self.P, self.E2 = (np.empty((batch, n_out), dtype) for _ in range(3))
        self.rows = np.arange(batch)
        self.grads = {"W1": np.empty((hidden, n_in), dtype).T, "b1": np.empty(hidden, dtype),
                      "W2": np.empty((hidden, n_out), dtype), "b2": np.empty(n_out, dtype)}


class Forward(NamedTuple):
    """What backprop needs from the forward pass (m = batch size)."""

    A1: np.ndarray  # (m, H) ReLU(Z1); [Z1 > 0] is [A1 > 0], so Z1 itself is not kept
    P: np.ndarray  # (m, 10) softmax probabilities
    log_norm: np.ndarray  # (m,) log sum_j exp(Z2_j - max Z2), for a stable log-likelihood
    shifted: np.ndarray  # (m, 10) Z2 - max over classes


def softmax(z: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise stable softmax of logits z (m, k), shifting z IN PLACE: returns (P, shifted z, log normaliser).

    Subtracting the row maximum keeps exp() <= 1, so it never overflows; log P is then
    shifted - log_norm, which is finite for every finite input.
    """
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z, out=out)
    total = p.sum(axis=1, keepdims=True)
    p /= total
    return p, z, np.log(total[:, 0])


def forward(params: Params, X: np.ndarray, ws: Workspace | None = None) -> Forward:
    """X (m, 784) -> cached activations. Z1 = X W1 + b1 is the note's W1^T x per column.

    Without a workspace, fresh arrays are allocated (only those a forward pass needs).
    """
    m = len(X)
    A1 = np.matmul(X, params["W1"], out=None if ws is None else ws.A1[:m])
    A1 += params["b1"]
    np.maximum(A1, 0, out=A1)  # ReLU in place: Z1 becomes A1
    Z2 = np.matmul(A1, params["W2"], out=None if ws is None else ws.Z2[:m])
    Z2 += params["b2"]
    P, shifted, log_norm = softmax(Z2, out=None if ws is None else ws.P[:m])
    return Forward(A1, P, log_norm, shifted)


def log_likelihoods(fwd: Forward, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """ln p_y per sample, from the shifted logits: never -inf for finite logits."""
    return np.subtract(fwd.shifted[np.arange(len(y)), y], fwd.log_norm, out=out)


def cross_entropy(fwd: Forward, y: np.ndarray) -> float:
    """Mean over the batch of -ln p_y."""
    return -float(np.mean(log_likelihoods(fwd, y)))


def backward(params: Params, X: np.ndarray, y: np.ndarray, fwd: Forward, scale: float = 1.0,
             ws: Workspace | None = None) -> Params:
    """Gradients of the mean cross-entropy with respect to every parameter (design steps 3-6),
    multiplied by `scale`. Training passes scale=lr: scaling the small (m, 10) error once is
    cheaper than scaling every gradient afterwards. y holds integer labels (m,); the one-hot Y
    of the note is never built.
    """
    m = X.shape[0]
    ws = ws or Workspace(params, m)
    g = ws.grads
    # Step 3: for softmax followed by cross-entropy, dL/dZ2 = P - Y; no softmax Jacobian needed.
    # The 1/m of the batch mean (and the scale) are folded in here once instead of in each gradient.
    E2 = ws.E2[:m]
    np.copyto(E2, fwd.P)
    E2[ws.rows[:m], y] -= 1
    E2 *= E2.dtype.type(scale / m)
    # Step 4: the note's X1 E2^T (H x 10) is A1^T E2 in row form; db sums over the batch axis only.
    np.matmul(fwd.A1.T, E2, out=g["W2"])
    E2.sum(axis=0, out=g["b2"])
    # Step 5: the note's (W2 E2) * [Z1 > 0] is (E2 W2^T) * [Z1 > 0] in row form.
    E1 = np.matmul(E2, params["W2"].T, out=ws.E1[:m])
    E1 *= np.greater(fwd.A1, 0, out=ws.active[:m])
    # Step 6: the note's X0 E1^T (784 x H) is X^T E1, computed as (E1^T X)^T (see Workspace).
    np.matmul(E1.T, X, out=g["W1"].T)
    E1.sum(axis=0, out=g["b1"])
    return g


def loss_and_grads(params: Params, X: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
    fwd = forward(params, X)
    return cross_entropy(fwd, y), backward(params, X, y, fwd)


def sgd_step(params: Params, grads: Params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
             velocity: Params | None = None) -> None:
    """Step 7, in place: w <- w - lr * dw, optionally with L2 weight decay and classical momentum.

    `grads` is used as scratch space and overwritten.
    """
    for grad in grads.values():
        grad *= grad.dtype.type(lr)
    apply_steps(params, grads, momentum, lr * weight_decay, velocity)


def apply_steps(params: Params, steps: Params, momentum: float = 0.0, decay: float = 0.0,
                velocity: Params | None = None) -> None:
    """Update with steps = lr * gradients (as backward(scale=lr) returns them), in place.

    L2 weight decay adds lr*weight_decay*W (`decay`) to the step of each weight matrix: the
    derivative of (weight_decay/2)*||W||^2; biases are not decayed. With `velocity` (zeros shaped
    like params), classical momentum: v <- momentum * v - step, w <- w + v; else w <- w - step.
    `steps` is overwritten.
    """
    for key, step in steps.items():
        w = params[key]
        scalar = w.dtype.type  # keep float32 math in float32
        if decay and key.startswith("W"):
            step += scalar(decay) * w
        if velocity is None:
            w -= step
        else:
            v = velocity[key]
            v *= scalar(momentum)
            v -= step
            w += v


def loss_and_accuracy(params: Params, X: np.ndarray, y: np.ndarray, chunk: int = 10_000) -> tuple[float, float, np.ndarray]:
    """Mean cross-entropy, accuracy and predicted labels over a whole split."""
    total, preds = 0.0, []
    for i in range(0, len(X), chunk):
        fwd = forward(params, X[i:i + chunk])
        total += cross_entropy(fwd, y[i:i + chunk]) * len(fwd.P)
        preds.append(fwd.P.argmax(axis=1))
    pred = np.concatenate(preds)
    return total / len(X), float(np.mean(pred == y)), pred
