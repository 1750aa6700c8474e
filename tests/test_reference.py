"""The reference network's math (model/reference.py): gradients against central differences,
one step by hand, stability on extreme logits, the design's initialisation, dtypes."""

import numpy as np
import pytest

from mnist_np.model import reference


def loss(params, X0, y, weight_decay=0.0):
    penalty = weight_decay / 2 * sum((params[k] ** 2).sum() for k in ("W1", "W2"))
    return reference.cross_entropy(reference.forward(params, X0).Z2, y) + penalty


def central_differences(params, X0, y, weight_decay=0.0, eps=1e-6):
    grads = {}
    for key, value in params.items():
        g = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            old = value[idx]
            value[idx] = old + eps
            plus = loss(params, X0, y, weight_decay)
            value[idx] = old - eps
            minus = loss(params, X0, y, weight_decay)
            value[idx] = old
            g[idx] = (plus - minus) / (2 * eps)
        grads[key] = g
    return grads


def gradients(params, X0, y):
    return reference.backward(params, X0, reference.one_hot(y, dtype=X0.dtype), reference.forward(params, X0))


@pytest.mark.parametrize("scheme", ["uniform", "he", "glorot"])
def test_backprop_matches_central_differences_for_every_parameter(scheme):
    # H=5 != 10 so that W2 (H x 10) and the hidden error W2 E2 are checked in their corrected form.
    rng = np.random.default_rng(1)
    params = reference.init_params(5, rng, scheme, np.float64, n_in=7)
    X0 = rng.uniform(0, 1, size=(7, 6))  # 6 samples as columns
    y = np.array([0, 3, 9, 3, 5, 1])
    analytic, numeric = gradients(params, X0, y), central_differences(params, X0, y)
    for key in ("W1", "b1", "W2", "b2"):
        assert analytic[key].shape == params[key].shape
        np.testing.assert_allclose(analytic[key], numeric[key], rtol=1e-5, atol=1e-8, err_msg=key)


def test_weight_decay_step_is_the_gradient_of_the_penalised_loss():
    rng = np.random.default_rng(5)
    params = reference.init_params(3, rng, "uniform", np.float64, n_in=4)
    X0, y, wd = rng.uniform(size=(4, 5)), np.array([0, 1, 2, 3, 4]), 0.3
    before = {k: v.copy() for k, v in params.items()}
    numeric = central_differences(params, X0, y, wd)
    reference.update(params, gradients(params, X0, y), alpha=1.0, weight_decay=wd)  # alpha 1: the step is the gradient
    for key in params:
        np.testing.assert_allclose(before[key] - params[key], numeric[key], rtol=1e-5, atol=1e-8, err_msg=key)


def test_bias_gradients_are_per_neuron_not_one_shared_value():
    rng = np.random.default_rng(2)
    params = reference.init_params(4, rng, "uniform", np.float64, n_in=3)
    grads = gradients(params, rng.uniform(size=(3, 5)), np.array([1, 2, 3, 4, 5]))
    assert len(np.unique(np.round(grads["b2"], 12))) == 10
    assert len(np.unique(np.round(grads["b1"], 12))) > 1


def test_one_training_step_matches_hand_computation():
    # x = (1, 2); W1 = [[1, 0], [0, -1]] -> z1 = (1, -2), a1 = (1, 0); W2 = [[1, 0], [0, 0]] -> z2 = (1, 0).
    # With s = 1 / (1 + e): p = (1 - s, s), loss = -ln(1 - s) for label 0, E2 = p - y = (-s, s).
    params = {
        "W1": np.array([[1.0, 0.0], [0.0, -1.0]]),
        "b1": np.zeros(2),
        "W2": np.array([[1.0, 0.0], [0.0, 0.0]]),
        "b2": np.zeros(2),
    }
    X0, y = np.array([[1.0], [2.0]]), np.array([0])
    s = 1 / (1 + np.e)
    fwd = reference.forward(params, X0)
    assert reference.cross_entropy(fwd.Z2, y) == pytest.approx(-np.log(1 - s))
    grads = reference.backward(params, X0, reference.one_hot(y, 2, np.float64), fwd)
    np.testing.assert_allclose(grads["W2"], [[-s, s], [0, 0]])  # a1 E2^T
    np.testing.assert_allclose(grads["b2"], [-s, s])
    # E1 = (W2 E2) * [z1 > 0] = (-s, 0); dW1 = x E1^T; db1 = E1.
    np.testing.assert_allclose(grads["W1"], [[-s, 0], [-2 * s, 0]])
    np.testing.assert_allclose(grads["b1"], [-s, 0])
    reference.update(params, grads, alpha=0.5)
    np.testing.assert_allclose(params["W1"], [[1 + s / 2, 0], [s, -1]])
    np.testing.assert_allclose(params["W2"], [[1 + s / 2, -s / 2], [0, 0]])
    np.testing.assert_allclose(params["b2"], [s / 2, -s / 2])


def test_momentum_step_by_hand_stays_float32():
    params = {"W1": np.array([[1.0]], dtype=np.float32)}
    velocity = {"W1": np.array([[0.5]], dtype=np.float32)}
    reference.update(params, {"W1": np.array([[2.0]], dtype=np.float32)}, alpha=0.1, momentum=0.9, velocity=velocity)
    # v = 0.9 * 0.5 - 0.1 * 2 = 0.25; w = 1 + 0.25
    assert velocity["W1"][0, 0] == pytest.approx(0.25) and params["W1"][0, 0] == pytest.approx(1.25)
    assert params["W1"].dtype == np.float32 and velocity["W1"].dtype == np.float32


def test_softmax_and_loss_are_finite_for_extreme_logits():
    Z = np.array([[1000.0, -1e4], [-1000.0, -1e4], [0.0, -1e4]], dtype=np.float32)  # 2 samples as columns
    P = np.exp(reference.log_softmax(Z))
    assert np.isfinite(P).all() and np.allclose(P.sum(axis=0), 1)
    assert P[0, 0] == 1 and P[0, 1] == pytest.approx(1 / 3)
    # -ln p for the hopeless class 1 of sample 0 is 2000, not inf.
    assert reference.cross_entropy(Z, np.array([1, 0])) == pytest.approx((2000 + np.log(3)) / 2)


def test_uniform_init_is_the_designs_range_and_shapes():
    params = reference.init_params(10, np.random.default_rng(0))
    assert {k: v.shape for k, v in params.items()} == {"W1": (784, 10), "b1": (10,), "W2": (10, 10), "b2": (10,)}
    for value in params.values():
        assert value.dtype == np.float32 and value.min() >= -0.5 and value.max() <= 0.5
    he = reference.init_params(64, np.random.default_rng(0), "he")
    assert np.abs(he["W1"]).max() <= np.sqrt(6 / 784) and not he["b1"].any()
    glorot = reference.init_params(64, np.random.default_rng(0), "glorot")
    assert np.abs(glorot["W2"]).max() <= np.sqrt(6 / 74) < np.abs(he["W2"]).max()


def test_float32_stays_float32_through_every_step():
    rng = np.random.default_rng(3)
    params = reference.init_params(6, rng)
    X0, y = rng.uniform(size=(784, 4)).astype(np.float32), np.array([1, 2, 3, 4])
    fwd = reference.forward(params, X0)
    grads = reference.backward(params, X0, reference.one_hot(y), fwd)
    reference.update(
        params, grads, 0.1, momentum=0.9, weight_decay=1e-3, velocity={k: np.zeros_like(v) for k, v in params.items()}
    )
    assert all(a.dtype == np.float32 for a in (*fwd, *grads.values(), *params.values()))
    assert reference.predict_proba(params, X0.T).shape == (4, 10)
