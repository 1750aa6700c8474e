"""The network's math: gradients against finite differences, one step by hand, stability, dtypes."""

import sys

import numpy as np
import pytest

from mnist_np import network, training
from mnist_np.config import ModelConfig, TrainConfig


def numeric_grads(params, X, y, eps=1e-6):
    grads = {}
    for key, value in params.items():
        g = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            old = value[idx]
            value[idx] = old + eps
            plus = network.cross_entropy(network.forward(params, X), y)
            value[idx] = old - eps
            minus = network.cross_entropy(network.forward(params, X), y)
            value[idx] = old
            g[idx] = (plus - minus) / (2 * eps)
        grads[key] = g
    return grads


@pytest.mark.parametrize("scheme", ["uniform", "he", "glorot"])
def test_backprop_matches_central_differences_for_every_parameter(scheme):
    # H=5 != 10 so that W2 (H x 10) and the hidden error W2 E2 are checked in their corrected form.
    rng = np.random.default_rng(1)
    params = network.init_params(5, rng, scheme, np.float64, n_in=7)
    X = rng.uniform(0, 1, size=(6, 7))
    y = np.array([0, 3, 9, 3, 5, 1])
    _, analytic = network.loss_and_grads(params, X, y)
    numeric = numeric_grads(params, X, y)
    for key in ("W1", "b1", "W2", "b2"):
        assert analytic[key].shape == params[key].shape
        np.testing.assert_allclose(analytic[key], numeric[key], rtol=1e-5, atol=1e-8, err_msg=key)


def test_bias_gradients_are_per_neuron_not_one_shared_value():
    rng = np.random.default_rng(2)
    params = network.init_params(4, rng, "uniform", np.float64, n_in=3)
    _, grads = network.loss_and_grads(params, rng.uniform(size=(5, 3)), np.array([1, 2, 3, 4, 5]))
    assert len(np.unique(np.round(grads["b2"], 12))) > 1


def test_one_training_step_matches_hand_computation():
    # x = (1, 2); W1 = [[1, 0], [0, -1]] -> z1 = (1, -2), a1 = (1, 0); W2 = [[1, 0], [0, 0]] -> z2 = (1, 0).
    # With s = 1 / (1 + e): p = (1 - s, s), loss = -ln(1 - s) for label 0, E2 = p - y = (-s, s).
    params = {"W1": np.array([[1.0, 0.0], [0.0, -1.0]]), "b1": np.zeros(2),
              "W2": np.array([[1.0, 0.0], [0.0, 0.0]]), "b2": np.zeros(2)}
    X, y = np.array([[1.0, 2.0]]), np.array([0])
    s = 1 / (1 + np.e)
    loss, grads = network.loss_and_grads(params, X, y)
    assert loss == pytest.approx(-np.log(1 - s))
    np.testing.assert_allclose(grads["W2"], [[-s, s], [0, 0]])  # a1^T E2
    np.testing.assert_allclose(grads["b2"], [-s, s])
    # E1 = (E2 W2^T) * [z1 > 0] = (-s, 0); dW1 = x^T E1; db1 = E1.
    np.testing.assert_allclose(grads["W1"], [[-s, 0], [-2 * s, 0]])
    np.testing.assert_allclose(grads["b1"], [-s, 0])
    network.sgd_step(params, grads, lr=0.5)
    np.testing.assert_allclose(params["W1"], [[1 + s / 2, 0], [s, -1]])
    np.testing.assert_allclose(params["W2"], [[1 + s / 2, -s / 2], [0, 0]])
    np.testing.assert_allclose(params["b2"], [s / 2, -s / 2])


def test_softmax_and_loss_are_finite_for_extreme_logits():
    z = np.array([[1000.0, -1000.0, 0.0], [-1e4, -1e4, -1e4]], dtype=np.float32)
    p, shifted, total = network.softmax(z.copy())
    assert np.isfinite(p).all() and np.allclose(p.sum(axis=1), 1)
    assert p[0, 0] == 1 and p[1, 0] == pytest.approx(1 / 3)
    # -ln p for the hopeless class 1 of sample 0 is 2000, not inf.
    fwd = network.Forward(None, p, shifted, total)
    assert network.cross_entropy(fwd, np.array([1, 0])) == pytest.approx((2000 + np.log(3)) / 2)


def test_uniform_init_is_the_designs_range_and_shapes():
    params = network.init_params(10, np.random.default_rng(0))
    assert {k: v.shape for k, v in params.items()} == {"W1": (784, 10), "b1": (10,), "W2": (10, 10), "b2": (10,)}
    for value in params.values():
        assert value.dtype == np.float32 and value.min() >= -0.5 and value.max() <= 0.5
    he = network.init_params(64, np.random.default_rng(0), "he")
    assert np.abs(he["W1"]).max() <= np.sqrt(6 / 784) and not he["b1"].any()


def _tiny_problem(seed=0, n=200):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, size=n)
    x = rng.uniform(0, 0.2, size=(n, 784)).astype(np.float32)
    x[np.arange(n), y * 7] = 1.0
    return x, y


def test_training_stays_float32_and_learns():
    x, y = _tiny_problem()
    params, history = training.fit(x[:150], y[:150], x[150:], y[150:], ModelConfig(hidden_size=16),
                                   TrainConfig(lr=0.1, batch_size=10, epochs=15), progress=False)
    assert all(v.dtype == np.float32 for v in params.values())
    assert network.forward(params, x[:4]).P.dtype == np.float32
    _, grads = network.loss_and_grads(params, x[:4], y[:4])
    assert all(g.dtype == np.float32 for g in grads.values())
    assert history[-1].train_loss < history[0].train_loss
    assert history[-1].val_accuracy > 0.5  # chance is 0.1


def test_float64_setting_trains_in_float64():
    x, y = _tiny_problem()
    params, _ = training.fit(x, y, x, y, ModelConfig(), TrainConfig(epochs=1, dtype="float64"), progress=False)
    assert all(v.dtype == np.float64 for v in params.values())


def test_same_seed_gives_bit_identical_weights_and_metrics_and_another_seed_differs():
    x, y = _tiny_problem()
    runs = [training.fit(x, y, x, y, ModelConfig(), TrainConfig(epochs=2, seed=seed), progress=False)
            for seed in (3, 3, 4)]
    (p1, h1), (p2, h2), (p3, _) = runs
    for key in p1:
        assert np.array_equal(p1[key], p2[key])
    assert [(s.train_loss, s.val_accuracy) for s in h1] == [(s.train_loss, s.val_accuracy) for s in h2]
    assert not np.array_equal(p1["W1"], p3["W1"])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_divergence_is_reported_instead_of_returning_nan_weights():
    from mnist_np.errors import TrainingError

    x, y = _tiny_problem()
    with pytest.raises(TrainingError, match="train.lr"):
        training.fit(x * 1e10, y, x, y, ModelConfig(), TrainConfig(lr=1e30, epochs=3), progress=False)


def test_weight_decay_gradient_matches_central_differences_of_the_penalised_loss():
    rng = np.random.default_rng(5)
    params = network.init_params(3, rng, "uniform", np.float64, n_in=4)
    X, y, wd = rng.uniform(size=(5, 4)), np.array([0, 1, 2, 3, 4]), 0.3

    def penalised(p):
        return network.cross_entropy(network.forward(p, X), y) + wd / 2 * sum((p[k] ** 2).sum() for k in ("W1", "W2"))

    _, grads = network.loss_and_grads(params, X, y)
    before = {k: v.copy() for k, v in params.items()}
    network.sgd_step(params, grads, lr=1.0, weight_decay=wd)  # with lr 1, the step is exactly the gradient
    for key in params:
        eps, numeric = 1e-6, np.zeros_like(before[key])
        for idx in np.ndindex(before[key].shape):
            plus = {k: v.copy() for k, v in before.items()}
            minus = {k: v.copy() for k, v in before.items()}
            plus[key][idx] += eps
            minus[key][idx] -= eps
            numeric[idx] = (penalised(plus) - penalised(minus)) / (2 * eps)
        np.testing.assert_allclose(before[key] - params[key], numeric, rtol=1e-5, atol=1e-8, err_msg=key)


def test_momentum_step_by_hand():
    params = {"W1": np.array([[1.0]], dtype=np.float32)}
    velocity = {"W1": np.array([[0.5]], dtype=np.float32)}
    network.sgd_step(params, {"W1": np.array([[2.0]], dtype=np.float32)}, lr=0.1, momentum=0.9, velocity=velocity)
    # v = 0.9 * 0.5 - 0.1 * 2 = 0.25; w = 1 + 0.25
    assert velocity["W1"][0, 0] == pytest.approx(0.25) and params["W1"][0, 0] == pytest.approx(1.25)
    assert params["W1"].dtype == np.float32 and velocity["W1"].dtype == np.float32


def test_training_leaves_the_callers_arrays_alone_and_keeps_labels_with_images():
    x, y = _tiny_problem()
    x_before, y_before = x.copy(), y.copy()
    _, history = training.fit(x, y, x, y, ModelConfig(hidden_size=32), TrainConfig(epochs=8, lr=0.2, batch_size=10),
                              progress=False)
    assert np.array_equal(x, x_before) and np.array_equal(y, y_before)
    # Batches are gathered in shuffled order: if labels left their images, nothing could be learnt.
    assert history[-1].train_accuracy > 0.8 and history[-1].val_accuracy > 0.8


def test_early_stopping_returns_the_best_validation_weights():
    x, y = _tiny_problem(n=300)
    seen = []
    cfg = TrainConfig(epochs=40, lr=2.0, batch_size=5, early_stopping=2)  # a large step that plateaus/oscillates
    params, history = training.fit(x[:200], y[:200], x[200:], y[200:], ModelConfig(hidden_size=8), cfg,
                                   on_epoch=seen.append, progress=False)
    best = max(reversed(history), key=lambda s: s.val_accuracy)  # the latest of equals
    assert len(history) < 40 and len(history) - best.epoch == 2
    _, accuracy, _ = network.loss_and_accuracy(params, x[200:], y[200:])
    assert accuracy == best.val_accuracy


def test_lr_decay_and_momentum_change_training():
    x, y = _tiny_problem()
    base = TrainConfig(epochs=2, lr=0.05)
    plain, _ = training.fit(x, y, x, y, ModelConfig(), base, progress=False)
    for variant in (dict(lr_decay=0.5), dict(momentum=0.9), dict(weight_decay=0.01)):
        other, _ = training.fit(x, y, x, y, ModelConfig(), TrainConfig(epochs=2, lr=0.05, **variant), progress=False)
        assert not np.array_equal(plain["W1"], other["W1"]), variant


@pytest.mark.parametrize("options", [{}, {"weight_decay": 0.01},
                                     {"momentum": 0.9, "weight_decay": 0.01, "lr_decay": 0.5}])
def test_training_loop_matches_the_reference_steps_batch_for_batch(options):
    # fit's fast path (train_step: the update inside the products, then axpy for momentum;
    # workspaces, epoch-long logits, a last batch of 2) against the plain reference:
    # loss_and_grads and sgd_step on fresh arrays.
    x, y = _tiny_problem(n=30)
    x, y = x.astype(np.float64), y
    cfg = TrainConfig(lr=0.3, batch_size=7, epochs=2, seed=11, dtype="float64", **options)
    params, history = training.fit(x, y, x[:5], y[:5], ModelConfig(hidden_size=6, init="he"), cfg, progress=False)

    init_rng, order_rng = np.random.default_rng(cfg.seed).spawn(2)
    ref = network.init_params(6, init_rng, "he", np.float64)
    velocity = {k: np.zeros_like(v) for k, v in ref.items()} if cfg.momentum else None
    for epoch in range(cfg.epochs):
        lr, losses, correct = cfg.lr * cfg.lr_decay ** epoch, [], 0
        order = order_rng.permutation(len(x))
        for i in range(0, len(x), cfg.batch_size):
            batch = order[i:i + cfg.batch_size]
            fwd = network.forward(ref, x[batch])
            losses += list(-network.log_likelihoods(fwd, y[batch]))
            correct += int((fwd.P.argmax(axis=1) == y[batch]).sum())
            _, grads = network.loss_and_grads(ref, x[batch], y[batch])
            network.sgd_step(ref, grads, lr, cfg.momentum, cfg.weight_decay, velocity)
        assert history[epoch].train_loss == pytest.approx(np.mean(losses), rel=1e-12)
        assert history[epoch].train_accuracy == correct / len(x)
    for key in ref:
        np.testing.assert_allclose(params[key], ref[key], rtol=1e-12, atol=1e-12, err_msg=key)


def test_packed_parameters_are_views_of_one_vector_weights_first():
    params = network.init_params(3, np.random.default_rng(0), n_in=4)
    flat = network.pack(params)
    assert flat.vector.shape == (4 * 3 + 3 * 10 + 3 + 10,) and flat.n_weights == 4 * 3 + 3 * 10
    for key, value in params.items():
        assert np.array_equal(flat.params[key], value) and np.shares_memory(flat.params[key], flat.vector)
    assert flat.params["W1"].flags.f_contiguous and flat.params["W2"].flags.f_contiguous  # as BLAS writes
    flat.vector[:flat.n_weights] = 0  # the weights, and nothing but the weights, come first
    assert not flat.params["W1"].any() and not flat.params["W2"].any() and flat.params["b2"].all()


def test_backward_accumulates_into_given_arrays_as_blas_does():
    rng = np.random.default_rng(6)
    params = network.init_params(5, rng, "he", np.float64, n_in=7)
    X, y = rng.uniform(size=(4, 7)), np.array([1, 0, 9, 4])
    Y = network.one_hot(y, dtype=np.float64)
    _, grads = network.loss_and_grads(params, X, y)
    grads = {k: v.copy() for k, v in grads.items()}
    flat = network.pack(params)
    fwd = network.forward(flat.params, X)

    target = network.pack({k: rng.uniform(size=v.shape) for k, v in params.items()})
    before = {k: v.copy() for k, v in target.params.items()}
    network.backward(flat.params, X, Y, fwd, alpha=-0.3, into=target.params, beta=0.5, beta_bias=2.0)
    for key in params:
        beta = 2.0 if key.startswith("b") else 0.5
        np.testing.assert_allclose(target.params[key], beta * before[key] - 0.3 * grads[key], rtol=1e-12, err_msg=key)

    # Into the parameters themselves: every parameter is read before any is written.
    network.backward(flat.params, X, Y, fwd, alpha=-0.3, into=flat.params, beta=1.0)
    for key in params:
        np.testing.assert_allclose(flat.params[key], params[key] - 0.3 * grads[key], rtol=1e-12, err_msg=key)


def test_backward_refuses_outputs_blas_would_silently_copy():
    rng = np.random.default_rng(7)
    params = network.init_params(3, rng, "he", np.float64, n_in=4)
    X, Y = rng.uniform(size=(2, 4)), network.one_hot(np.array([1, 2]), dtype=np.float64)
    c_ordered = {k: np.zeros(v.shape) for k, v in params.items()}  # row-major: BLAS would write a copy
    with pytest.raises(ValueError, match="Fortran-contiguous"):
        network.backward(params, X, Y, network.forward(params, X), into=c_ordered)


def test_switch_interval_is_restored_even_when_training_fails():
    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError):
        with training.switch_interval(1e-3):
            assert sys.getswitchinterval() == pytest.approx(1e-3)
            raise RuntimeError("boom")
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize("n, batch, chunk_rows", [(23, 5, 10), (20, 5, 10), (7, 10, 4), (9, 3, 1000)])
def test_shuffled_batches_yield_every_row_once_in_order_as_contiguous_views(n, batch, chunk_rows):
    rng = np.random.default_rng(0)
    x, labels = rng.uniform(size=(n, 3)).astype(np.float32), np.arange(n)
    order = rng.permutation(n)
    seen, sizes = [], []
    for xb, yb in training.shuffled_batches((x, labels), order, batch, chunk_rows):
        assert xb.flags.c_contiguous and np.array_equal(xb, x[yb])  # rows stay with their labels
        seen += list(yb)
        sizes.append(len(yb))
    assert seen == list(order)
    assert sizes == [batch] * (n // batch) + ([n % batch] if n % batch else [])
