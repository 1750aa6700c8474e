"""The training kernel (model/kernel.py) held to the reference network: the same parameters after
hundreds of fused steps, its packed layout, and its refusal of outputs BLAS would silently copy."""

import numpy as np
import pytest

from mnist_np.model import kernel, reference

OPTIONS = [
    {"momentum": 0.0, "weight_decay": 0.0},
    {"momentum": 0.0, "weight_decay": 1e-3},
    {"momentum": 0.9, "weight_decay": 1e-3},
]


def steps_both_ways(dtype, momentum, weight_decay, n=103, batch=10, epochs=30, hidden=12, lr=0.05, seed=0):
    """Train one network with the kernel and one with the reference on the same batches
    (the last batch of each epoch has 3 samples); return both parameter sets and the step count."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(n, 784)).astype(dtype)
    y = rng.integers(0, 10, size=n)
    x[np.arange(n), y * 50] = 3.0  # learnable, so the weights keep moving
    ref = reference.init_params(hidden, rng, "he", dtype)
    flat = kernel.pack(ref)
    velocity = kernel.zeros(ref) if momentum else None
    ref_velocity = {k: np.zeros_like(v) for k, v in ref.items()} if momentum else None
    workspaces = {m: kernel.Workspace(ref, m) for m in (batch, n % batch)}
    steps = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n, batch):
            rows = order[i : i + batch]
            xb, yb = np.ascontiguousarray(x[rows]), y[rows]
            kernel.fused_step(
                flat,
                xb,
                kernel.one_hot_rows(yb, 10, dtype),
                workspaces[len(rows)],
                lr,
                momentum,
                weight_decay,
                velocity,
            )
            X0 = xb.T
            grads = reference.backward(ref, X0, reference.one_hot(yb, dtype=dtype), reference.forward(ref, X0))
            reference.update(ref, grads, lr, momentum, weight_decay, ref_velocity)
            steps += 1
    return flat.params, ref, steps


# Both memory orders of the hidden arrays (model/kernel.py: hidden_order): 12 units C, 70 Fortran.
HIDDEN = [12, 70]


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("options", OPTIONS)
def test_float64_kernel_equals_the_reference_within_1e_10_after_hundreds_of_steps(options, hidden):
    fast, ref, steps = steps_both_ways(np.float64, **options, hidden=hidden)
    assert steps == 330
    for key in ref:
        assert np.abs(fast[key] - ref[key]).max() <= 1e-10, key
        assert not np.allclose(ref[key], reference.init_params(hidden, np.random.default_rng(0), "he", np.float64)[key])


@pytest.mark.parametrize("options", OPTIONS)
def test_float32_kernel_stays_within_float32_rounding_of_the_reference(options):
    # Different summation orders round differently in float32 (eps 1.2e-7); over 330 steps the
    # parameters (of size up to ~1) drift apart by a few 1e-6 at most. At 12 units: from 64 on,
    # these random batches at lr 0.05 with momentum are chaotic (one ReLU flipping sign in one
    # step sends the float32 runs 1e-2 apart, in either memory order); the float64 test above
    # holds both orders to the reference.
    fast, ref, _ = steps_both_ways(np.float32, **options)
    for key in ref:
        assert fast[key].dtype == np.float32
        assert np.abs(fast[key] - ref[key]).max() <= 1e-5, key


@pytest.mark.parametrize("hidden", HIDDEN)
def test_forward_pass_matches_the_reference_and_keeps_a_finite_log_likelihood(hidden):
    rng = np.random.default_rng(4)
    params = reference.init_params(hidden, rng, "uniform", np.float64)
    x, y = rng.uniform(size=(5, 784)) * 40, np.array([0, 1, 2, 3, 4])  # large inputs: extreme logits
    fwd = kernel.forward(kernel.pack(params).params, x, kernel.Workspace(params, 5))
    np.testing.assert_allclose(fwd.P, reference.predict_proba(params, x), rtol=1e-12, atol=1e-300)
    likelihood = kernel.log_likelihoods(fwd.shifted, fwd.sums, y)
    assert np.isfinite(likelihood).all()
    assert -likelihood.mean() == pytest.approx(reference.cross_entropy(reference.forward(params, x.T).Z2, y), rel=1e-12)


@pytest.mark.parametrize("hidden", [3, 64])
def test_packed_parameters_are_views_of_one_vector_weights_first(hidden):
    params = reference.init_params(hidden, np.random.default_rng(0), n_in=4)
    flat = kernel.pack(params)
    assert flat.vector.shape == (4 * hidden + hidden * 10 + hidden + 10,)
    assert flat.n_weights == 4 * hidden + hidden * 10
    for key, value in params.items():
        assert np.array_equal(flat.params[key], value) and np.shares_memory(flat.params[key], flat.vector)
    # W2 as BLAS writes it; W1 row-major below 64 hidden units, as BLAS writes W1^T.
    assert flat.params["W2"].flags.f_contiguous
    W1 = flat.params["W1"].flags
    assert W1.c_contiguous == (hidden < 64) and W1.f_contiguous == (hidden >= 64)
    flat.vector[: flat.n_weights] = 0  # the weights, and nothing but the weights, come first
    assert not flat.params["W1"].any() and not flat.params["W2"].any() and flat.params["b2"].all()


@pytest.mark.parametrize("hidden", [5, 64])
def test_gradients_accumulate_into_given_arrays_as_blas_does(hidden):
    rng = np.random.default_rng(6)
    params = reference.init_params(hidden, rng, "he", np.float64, n_in=7)
    X, y = rng.uniform(size=(4, 7)), np.array([1, 0, 9, 4])
    grads = reference.backward(params, X.T, reference.one_hot(y, dtype=np.float64), reference.forward(params, X.T))
    flat, ws = kernel.pack(params), kernel.Workspace(params, 4)
    Y = kernel.one_hot_rows(y, 10, np.float64)
    fwd = kernel.forward(flat.params, X, ws)
    target = kernel.pack({k: rng.uniform(size=v.shape) for k, v in params.items()})
    before = {k: v.copy() for k, v in target.params.items()}
    kernel.accumulate_gradients(flat.params, X, Y, fwd, ws, -0.3, target.params, 0.5, 2.0)
    for key in params:
        beta = 2.0 if key.startswith("b") else 0.5
        np.testing.assert_allclose(target.params[key], beta * before[key] - 0.3 * grads[key], rtol=1e-12, err_msg=key)
    # Into the parameters themselves: every parameter is read before any is written.
    kernel.accumulate_gradients(flat.params, X, Y, fwd, ws, -0.3, flat.params, 1.0, 1.0)
    for key in params:
        np.testing.assert_allclose(flat.params[key], params[key] - 0.3 * grads[key], rtol=1e-12, err_msg=key)


def test_outputs_blas_would_silently_copy_are_refused():
    rng = np.random.default_rng(7)
    params = reference.init_params(3, rng, "he", np.float64, n_in=4)
    X, Y = rng.uniform(size=(2, 4)), kernel.one_hot_rows(np.array([1, 2]), 10, np.float64)
    ws = kernel.Workspace(params, 2)
    fwd = kernel.forward(kernel.pack(params).params, X, ws)
    strided = {k: np.zeros(v.shape + (2,))[..., 0] for k, v in params.items()}  # BLAS would write a copy
    with pytest.raises(ValueError, match="contiguous"):
        kernel.accumulate_gradients(params, X, Y, fwd, ws, 1.0, strided, 0.0, 0.0)
    single = {k: v.astype(np.float32) for k, v in params.items()}
    with pytest.raises(ValueError, match="contiguous float64"):
        kernel.accumulate_gradients(params, X, Y, fwd, ws, 1.0, single, 0.0, 0.0)
