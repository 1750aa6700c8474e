"""The network of shared/design/network.md in plain NumPy: read this beside the note.

784 inputs -> H ReLU units -> 10 softmax outputs, cross-entropy loss, mini-batch gradient descent.
Shapes follow the note's column-per-sample form: a batch X0 is (784, m), one sample per column,
and the one-hot labels Y are (10, m). Data is stored one sample per row, so callers pass `x.T`.
Parameters: W1 (784, H), b1 (H,), W2 (H, 10), b2 (10,); gradients come back with the same keys
and shapes. Evaluation, prediction and the served model use this module; training uses
kernel.py, a faster form of the same steps that is tested equal to this one.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

Params = dict[str, np.ndarray]  # keys W1, b1, W2, b2
N_INPUTS, N_CLASSES = 784, 10


def init_params(
    n_hidden: int,
    rng: np.random.Generator,
    scheme: str = "uniform",
    dtype="float32",
    n_in: int = N_INPUTS,
    n_out: int = N_CLASSES,
) -> Params:
    """The design's U[-0.5, 0.5] for every weight and bias ("uniform"), or for the weights
    U[-r, r] with r = sqrt(6 / fan_in) ("he", suits ReLU) or sqrt(6 / (fan_in + fan_out))
    ("glorot"), biases zero."""
    params = {}
    for layer, (fan_in, fan_out) in enumerate([(n_in, n_hidden), (n_hidden, n_out)], start=1):
        if scheme == "uniform":
            w, b = rng.uniform(-0.5, 0.5, (fan_in, fan_out)), rng.uniform(-0.5, 0.5, fan_out)
        else:
            r = np.sqrt(6.0 / {"he": fan_in, "glorot": fan_in + fan_out}[scheme])
            w, b = rng.uniform(-r, r, (fan_in, fan_out)), np.zeros(fan_out)
        params[f"W{layer}"], params[f"b{layer}"] = w.astype(dtype), b.astype(dtype)
    return params


def one_hot(y: np.ndarray, n_classes: int = N_CLASSES, dtype="float32") -> np.ndarray:
    """Integer labels (m,) -> the note's Y (n_classes, m)."""
    return np.eye(n_classes, dtype=dtype)[:, y]


def log_softmax(Z: np.ndarray) -> np.ndarray:
    """Column-wise ln softmax(Z). Subtracting each column's maximum keeps exp() <= 1 (no overflow)
    and leaves one term equal to 1, so the log of the sum is finite: never -inf or NaN."""
    shifted = Z - Z.max(axis=0, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=0, keepdims=True))


class Forward(NamedTuple):
    """What the forward pass keeps for backpropagation (m = batch size)."""

    Z1: np.ndarray  # (H, m) hidden pre-activations
    X1: np.ndarray  # (H, m) ReLU(Z1)
    Z2: np.ndarray  # (10, m) logits
    P: np.ndarray  # (10, m) softmax(Z2), each column sums to 1


def forward(params: Params, X0: np.ndarray) -> Forward:
    """Design steps 1-2. X0 (784, m) -> the layers' values."""
    Z1 = params["W1"].T @ X0 + params["b1"][:, None]  # step 1
    X1 = np.maximum(Z1, 0)
    Z2 = params["W2"].T @ X1 + params["b2"][:, None]  # step 2
    return Forward(Z1, X1, Z2, np.exp(log_softmax(Z2)))


def cross_entropy(Z2: np.ndarray, y: np.ndarray) -> float:
    """Mean over the batch of -ln p_y, from the logits (10, m) so that it stays finite."""
    return -float(log_softmax(Z2)[y, np.arange(len(y))].mean())


def backward(params: Params, X0: np.ndarray, Y: np.ndarray, fwd: Forward) -> Params:
    """Design steps 3-6: the gradients of the batch's mean cross-entropy, keyed like params."""
    m = X0.shape[1]
    E2 = fwd.P - Y  # step 3: softmax + cross-entropy give dL/dZ2 = P - Y; no softmax Jacobian
    dW2 = fwd.X1 @ E2.T / m  # step 4 (H, 10)
    db2 = E2.sum(axis=1) / m  # per output neuron: sum over the batch axis only
    E1 = (params["W2"] @ E2) * (fwd.Z1 > 0)  # step 5 (H, m): W2 E2, not W2^T E2 (see the note)
    dW1 = X0 @ E1.T / m  # step 6 (784, H)
    db1 = E1.sum(axis=1) / m
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def update(
    params: Params,
    grads: Params,
    alpha: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    velocity: Params | None = None,
) -> None:
    """Step 7, in place: w <- w - alpha * (dw + weight_decay * w).

    weight_decay is the derivative of the L2 penalty (weight_decay / 2) ||W||^2 and applies to the
    weight matrices, not the biases. With `velocity` (zeros like params at the start), classical
    momentum: v <- momentum v - alpha (dw + weight_decay w), w <- w + v.
    """
    for key, w in params.items():
        step = alpha * (grads[key] + weight_decay * w if key.startswith("W") else grads[key])
        if velocity is None:
            w -= step
        else:
            velocity[key] *= momentum
            velocity[key] -= step
            w += velocity[key]


def predict_proba(params: Params, x: np.ndarray) -> np.ndarray:
    """Probabilities (n, 10) for images stored as rows (n, 784)."""
    return forward(params, x.T).P.T
