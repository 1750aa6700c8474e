"""The network of shared/design/network.md: 784 -> H ReLU -> 10 softmax, cross-entropy, hand-written backprop.

Layout: the data come with samples as ROWS (X is m x 784, as stored), but every product below
is the note's, in its column-per-sample form (Z1 = W1^T X0 is H x m, with X0 = X^T): computed
into (units x m) arrays and handed around as their (m x units) transposed views, in which the
elementwise steps and the per-sample softmax read the same as in row form. Parameter shapes are
exactly the note's: W1 (784, H), b1 (H,), W2 (H, 10), b2 (10,). Gradients come back in a dict
with the same keys and shapes as the parameters.

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


class Flat(NamedTuple):
    """All parameters (or gradients) in one vector, with dict views into it.

    Layout: [W1 stored as (H, n_in), W2, b1, b2]. The weight matrices come first, so weight
    decay touches vector[:n_weights] only, and a whole update step is one vector operation
    instead of one per array.
    """

    vector: np.ndarray
    params: Params  # views into vector with the usual keys, shapes and memory orders
    n_weights: int


def pack(params: Params) -> Flat:
    """Copy params into a fresh Flat. W1's view is Fortran-ordered (see Workspace)."""
    (n_in, hidden), n_out = params["W1"].shape, params["W2"].shape[1]
    sizes = {"W1": n_in * hidden, "W2": hidden * n_out, "b1": hidden, "b2": n_out}
    vector = np.empty(sum(sizes.values()), params["W1"].dtype)
    views, start = {}, 0
    for key, size in sizes.items():
        views[key] = vector[start:start + size]
        start += size
    views["W1"] = views["W1"].reshape(hidden, n_in).T
    views["W2"] = views["W2"].reshape(hidden, n_out)
    for key, view in views.items():
        view[...] = params[key]
    return Flat(vector, {k: views[k] for k in ("W1", "b1", "W2", "b2")}, sizes["W1"] + sizes["W2"])


def one_hot(y: np.ndarray, n_classes: int = N_CLASSES, dtype: np.dtype | str = np.float32) -> np.ndarray:
    """Integer labels (m,) -> the design's one-hot Y, as rows (m, n_classes)."""
    return np.eye(n_classes, dtype=dtype)[y]


class Workspace:
    """Preallocated arrays for forward and backward passes of exactly `batch` samples.

    Training reuses a workspace for every batch, so the hot loop allocates nothing. The arrays
    of a Forward and the gradients returned with a workspace are views into it, valid until the
    next step. Hidden and output arrays are allocated in the note's column layout, (units, batch),
    and used through their (batch, units) transposes. Measured against row layout on this CPU:
    OpenBLAS computes the hidden layer's products about 30% faster at H=1024, and the softmax's
    per-sample max and sum reduce across contiguous rows (2.5x faster). dW1 is written as its
    transpose E1 X0^T into an (H, n_in) buffer, the order BLAS produces fastest, which is why W1
    is kept in that order too.
    """

    def __init__(self, params: Params, batch: int, grads: Flat | None = None) -> None:
        hidden, n_out, dtype = params["W2"].shape[0], params["W2"].shape[1], params["W1"].dtype
        self.A1, self.E1 = np.empty((hidden, batch), dtype).T, np.empty((hidden, batch), dtype).T
        self.active = np.empty((hidden, batch), bool).T
        self.Z2, self.P, self.E2 = (np.empty((n_out, batch), dtype).T for _ in range(3))
        self.total = np.empty((batch, 1), dtype)
        self.ones = np.ones(batch, dtype)  # bias gradients are row sums over the batch: E 1
        self.grads = grads or pack({k: np.zeros_like(v) for k, v in params.items()})


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

    The products go through np.dot, which costs about half a microsecond less per call than
    np.matmul (7% of a step at H=10) but writes only C-ordered outputs: hence the column layout.
    The shifted logits go to `logits` (m, 10) and the softmax sums to `total` (m, 1) when given
    (training keeps them for the epoch's statistics), else into the workspace; without a
    workspace, fresh arrays are allocated (only those a forward pass needs).
    """
    if ws is not None:
        logits = ws.Z2 if logits is None else logits
        total = ws.total if total is None else total
    # Step 1: Z1 = W1^T X0 (H x m), then + b1 and ReLU through the (m x H) view, in place.
    A1 = np.dot(params["W1"].T, X.T, out=None if ws is None else ws.A1.T).T
    A1 += params["b1"]
    np.maximum(A1, 0, out=A1)  # ReLU in place: Z1 becomes X1, the note's hidden output
    # Step 2: Z2 = W2^T X1 (10 x m), + b2.
    Z2 = np.dot(params["W2"].T, A1.T, out=None if logits is None else logits.T).T
    Z2 += params["b2"]
    P, shifted, sums = softmax(Z2, out=None if ws is None else ws.P, total=total)
    return Forward(A1, P, shifted, sums)


def log_likelihoods(fwd: Forward, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """ln p_y per sample, from the shifted logits: never -inf for finite logits."""
    return np.subtract(fwd.shifted[np.arange(len(y)), y], np.log(fwd.total), out=out)


def cross_entropy(fwd: Forward, y: np.ndarray) -> float:
    """Mean over the batch of -ln p_y."""
    return -float(np.mean(log_likelihoods(fwd, y)))


def backward(params: Params, X: np.ndarray, Y: np.ndarray, fwd: Forward, scale: float = 1.0,
             ws: Workspace | None = None) -> Params:
    """Gradients of the mean cross-entropy with respect to every parameter (design steps 3-6),
    multiplied by `scale`. Training passes scale=lr: scaling the small (m, 10) error once is
    cheaper than scaling every gradient afterwards. Y is the one-hot labels as rows (m, 10).
    """
    m = X.shape[0]
    ws = ws or Workspace(params, m)
    g = ws.grads.params
    # Step 3: for softmax followed by cross-entropy, dL/dZ2 = P - Y; no softmax Jacobian needed.
    # (E2 is the (m x 10) view; E2.T is the note's 10 x m E2.)
    # The 1/m of the batch mean (and the scale) are folded in here once instead of in each gradient.
    E2 = np.subtract(fwd.P, Y, out=ws.E2)
    E2 *= E2.dtype.type(scale / m)
    # Step 4: dW2 = X1 E2^T (H x 10); db2 = the row sums of E2 (over the batch only), as E2 1:
    # a product with ones is 4x faster than a sum over the batch axis at H=1024.
    np.dot(fwd.A1.T, E2, out=g["W2"])
    np.dot(E2.T, ws.ones, out=g["b2"])
    # Step 5: E1 = (W2 E2) * [Z1 > 0] (H x m); the mask through the (m x H) views.
    E1 = np.dot(params["W2"], E2.T, out=ws.E1.T).T
    E1 *= np.greater(fwd.A1, 0, out=ws.active)
    # Step 6: dW1 = X0 E1^T (784 x H), computed as its transpose E1 X0^T into W1's order (see
    # Workspace). np.matmul, not np.dot: for this product np.dot is 25% slower at H=1024.
    np.matmul(E1.T, X, out=g["W1"].T)
    np.dot(E1.T, ws.ones, out=g["b1"])
    return g


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

    L2 weight decay is the derivative of (weight_decay/2)*||W||^2 and applies to the weight
    matrices only, not the biases. `velocity` (zeros shaped like params) adds momentum.
    """
    for key, step in grads.items():
        w = params[key]
        step *= w.dtype.type(lr)
        if weight_decay and key.startswith("W"):
            step += w.dtype.type(lr * weight_decay) * w
        update(w, step, momentum, None if velocity is None else velocity[key])


def apply_steps(params: Flat, steps: Flat, momentum: float = 0.0, decay: float = 0.0,
                velocity: np.ndarray | None = None) -> None:
    """sgd_step on whole Flat vectors, with steps = lr * gradients (as backward(scale=lr) returns
    them) and decay = lr * weight_decay; `steps` is overwritten. `velocity` is shaped like params.vector.
    """
    w, step = params.vector, steps.vector
    if decay:
        step[:params.n_weights] += w.dtype.type(decay) * w[:params.n_weights]
    update(w, step, momentum, velocity)


def loss_and_accuracy(params: Params, X: np.ndarray, y: np.ndarray, chunk: int = 10_000) -> tuple[float, float, np.ndarray]:
    """Mean cross-entropy, accuracy and predicted labels over a whole split."""
    total, preds = 0.0, []
    for i in range(0, len(X), chunk):
        fwd = forward(params, X[i:i + chunk])
        total += cross_entropy(fwd, y[i:i + chunk]) * len(fwd.P)
        preds.append(fwd.P.argmax(axis=1))
    pred = np.concatenate(preds)
    return total / len(X), float(np.mean(pred == y)), pred
