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
    W2, b2 = layer(n_hidden, n_out)
    return {"W1": W1, "b1": b1, "W2": W2, "b2": b2}


class Forward(NamedTuple):
    """What backprop needs from the forward pass (m = batch size)."""

    Z1: np.ndarray  # (m, H) hidden pre-activations
    A1: np.ndarray  # (m, H) ReLU(Z1)
    P: np.ndarray  # (m, 10) softmax probabilities
    log_norm: np.ndarray  # (m,) log sum_j exp(Z2_j - max Z2), for a stable log-likelihood
    shifted: np.ndarray  # (m, 10) Z2 - max over classes


def softmax(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise stable softmax of logits z (m, k): returns (P, shifted logits, log normaliser).

    Subtracting the row maximum keeps exp() <= 1, so it never overflows; log P is then
    shifted - log_norm, which is finite for every finite input.
    """
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    return e / total, shifted, np.log(total[:, 0])


def forward(params: Params, X: np.ndarray) -> Forward:
    """X (m, 784) -> cached activations. Z1 = X W1 + b1 is the note's W1^T x per column."""
    Z1 = X @ params["W1"] + params["b1"]
    A1 = np.maximum(Z1, 0)
    P, shifted, log_norm = softmax(A1 @ params["W2"] + params["b2"])
    return Forward(Z1, A1, P, log_norm, shifted)


def cross_entropy(fwd: Forward, y: np.ndarray) -> float:
    """Mean over the batch of -ln p_y, from the shifted logits: never -inf for finite logits."""
    rows = np.arange(len(y))
    return float(np.mean(fwd.log_norm - fwd.shifted[rows, y]))


def backward(params: Params, X: np.ndarray, y: np.ndarray, fwd: Forward) -> Params:
    """Gradients of the mean cross-entropy with respect to every parameter (design steps 3-6).

    y holds integer labels (m,); the one-hot Y of the note is never built.
    """
    m = X.shape[0]
    rows = np.arange(m)
    # Step 3: for softmax followed by cross-entropy, dL/dZ2 = P - Y; no softmax Jacobian needed.
    # The 1/m of the batch mean is folded in here once instead of in each gradient.
    E2 = fwd.P.copy()
    E2[rows, y] -= 1
    E2 /= m
    # Step 4: the note's X1 E2^T (H x 10) is A1^T E2 in row form; db sums over the batch axis only.
    dW2 = fwd.A1.T @ E2
    db2 = E2.sum(axis=0)
    # Step 5: the note's (W2 E2) * [Z1 > 0] is (E2 W2^T) * [Z1 > 0] in row form.
    E1 = E2 @ params["W2"].T
    E1 *= fwd.Z1 > 0
    # Step 6.
    dW1 = X.T @ E1
    db1 = E1.sum(axis=0)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def loss_and_grads(params: Params, X: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
    fwd = forward(params, X)
    return cross_entropy(fwd, y), backward(params, X, y, fwd)


def sgd_step(params: Params, grads: Params, lr: float) -> None:
    """Step 7, in place: w <- w - lr * dw."""
    for key, grad in grads.items():
        params[key] -= params[key].dtype.type(lr) * grad


def loss_and_accuracy(params: Params, X: np.ndarray, y: np.ndarray, chunk: int = 10_000) -> tuple[float, float, np.ndarray]:
    """Mean cross-entropy, accuracy and predicted labels over a whole split."""
    total, preds = 0.0, []
    for i in range(0, len(X), chunk):
        fwd = forward(params, X[i:i + chunk])
        total += cross_entropy(fwd, y[i:i + chunk]) * len(fwd.P)
        preds.append(fwd.P.argmax(axis=1))
    pred = np.concatenate(preds)
    return total / len(X), float(np.mean(pred == y)), pred
