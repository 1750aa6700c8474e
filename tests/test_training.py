"""The training loop (training/loop.py): it learns, stays float32, is seeded, refuses divergence,
keeps the best epoch with early stopping, and matches the reference network batch for batch."""

import dataclasses
import sys

import numpy as np
import pytest

from helpers import project_config, tiny_problem
from mnist_np.errors import TrainingError
from mnist_np.model import reference
from mnist_np.training import loop, metrics

BASE = project_config()


def configs(hidden_size=10, init="uniform", **train):
    """The project's model and train configs with some values replaced (and validated again)."""
    return dataclasses.replace(BASE.model, hidden_size=hidden_size, init=init), dataclasses.replace(BASE.train, **train)


def test_training_stays_float32_and_learns():
    x, y = tiny_problem()
    fit = loop.fit(x[:150], y[:150], x[150:], y[150:], *configs(16, lr=0.1, batch_size=10, epochs=15), progress=False)
    assert all(v.dtype == np.float32 for v in fit.params.values())
    assert reference.predict_proba(fit.params, x[:4]).dtype == np.float32
    assert fit.history[-1].train_loss < fit.history[0].train_loss / 2
    assert fit.history[-1].val_accuracy > 0.5  # chance is 0.1
    assert fit.kept == fit.history[-1]  # no early stopping: the last epoch's weights


def test_float64_setting_trains_in_float64():
    x, y = tiny_problem()
    fit = loop.fit(x, y, x, y, *configs(epochs=1, dtype="float64"), progress=False)
    assert all(v.dtype == np.float64 for v in fit.params.values())


def test_same_seed_gives_bit_identical_weights_and_metrics_and_another_seed_differs():
    x, y = tiny_problem()
    fits = [loop.fit(x, y, x, y, *configs(epochs=2, seed=seed), progress=False) for seed in (3, 3, 4)]
    for key in fits[0].params:
        assert np.array_equal(fits[0].params[key], fits[1].params[key])
    assert [(s.train_loss, s.val_accuracy) for s in fits[0].history] == [
        (s.train_loss, s.val_accuracy) for s in fits[1].history
    ]
    assert not np.array_equal(fits[0].params["W1"], fits[2].params["W1"])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_divergence_is_reported_instead_of_returning_nan_weights():
    x, y = tiny_problem()
    with pytest.raises(TrainingError, match=r"non-finite in epoch 1 with train.lr=1e\+30; lower train.lr"):
        loop.fit(x * 1e10, y, x, y, *configs(lr=1e30, epochs=3), progress=False)


def test_training_leaves_the_callers_arrays_alone_and_keeps_labels_with_images():
    x, y = tiny_problem()
    x_before, y_before = x.copy(), y.copy()
    fit = loop.fit(x, y, x, y, *configs(32, epochs=8, lr=0.2, batch_size=10), progress=False)
    assert np.array_equal(x, x_before) and np.array_equal(y, y_before)
    # Batches are gathered in shuffled order: if labels left their images, nothing could be learnt.
    assert fit.history[-1].train_accuracy > 0.8 and fit.history[-1].val_accuracy > 0.8


def test_early_stopping_keeps_the_best_validation_epoch_the_latest_of_equals():
    x, y = tiny_problem(n=300)
    seen = []
    fit = loop.fit(
        x[:200],
        y[:200],
        x[200:],
        y[200:],
        *configs(8, epochs=40, lr=2.0, batch_size=5, early_stopping=2),
        on_epoch=seen.append,
        progress=False,
    )  # a large step that plateaus and oscillates
    best = max(reversed(fit.history), key=lambda s: s.val_accuracy)
    assert seen == fit.history and len(fit.history) < 40 and len(fit.history) - best.epoch == 2
    assert fit.kept == best and fit.kept != fit.history[-1]
    _, accuracy, _ = metrics.evaluate(fit.params, x[200:], y[200:])
    assert accuracy == best.val_accuracy


def test_lr_decay_momentum_and_weight_decay_each_change_training():
    x, y = tiny_problem()
    plain = loop.fit(x, y, x, y, *configs(epochs=2, lr=0.05), progress=False).params
    for variant in (dict(lr_decay=0.5), dict(momentum=0.9), dict(weight_decay=0.01)):
        other = loop.fit(x, y, x, y, *configs(epochs=2, lr=0.05, **variant), progress=False).params
        assert not np.array_equal(plain["W1"], other["W1"]), variant


@pytest.mark.parametrize(
    "options", [{}, {"weight_decay": 0.01}, {"momentum": 0.9, "weight_decay": 0.01, "lr_decay": 0.5}]
)
def test_fit_matches_the_reference_network_batch_for_batch(options):
    # fit (kernel steps, workspaces, epoch-long logits, prefetched batches, a last batch of 2)
    # against reference.forward/backward/update on the same batches, in float64.
    x, y = tiny_problem(n=30)
    x = x.astype(np.float64)
    model, train = configs(6, "he", lr=0.3, batch_size=7, epochs=3, seed=11, dtype="float64", **options)
    fit = loop.fit(x, y, x[:5], y[:5], model, train, progress=False)

    init_rng, order_rng = np.random.default_rng(train.seed).spawn(2)
    ref = reference.init_params(6, init_rng, "he", np.float64)
    velocity = {k: np.zeros_like(v) for k, v in ref.items()} if train.momentum else None
    for epoch in range(train.epochs):
        lr, losses, correct = train.lr * train.lr_decay**epoch, [], 0
        order = order_rng.permutation(len(x))
        for i in range(0, len(x), train.batch_size):
            batch = order[i : i + train.batch_size]
            X0 = x[batch].T
            fwd = reference.forward(ref, X0)
            losses.append(reference.cross_entropy(fwd.Z2, y[batch]) * len(batch))
            correct += int((fwd.P.argmax(axis=0) == y[batch]).sum())
            grads = reference.backward(ref, X0, reference.one_hot(y[batch], dtype=np.float64), fwd)
            reference.update(ref, grads, lr, train.momentum, train.weight_decay, velocity)
        assert fit.history[epoch].train_loss == pytest.approx(sum(losses) / len(x), rel=1e-12)
        assert fit.history[epoch].train_accuracy == correct / len(x)
        val_loss, val_accuracy, _ = metrics.evaluate(ref, x[:5], y[:5])
        assert fit.history[epoch].val_loss == pytest.approx(val_loss, rel=1e-12)
        assert fit.history[epoch].val_accuracy == val_accuracy
    for key in ref:
        np.testing.assert_allclose(fit.params[key], ref[key], rtol=1e-12, atol=1e-12, err_msg=key)


def test_switch_interval_is_restored_even_when_training_fails():
    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError, match="boom"), loop.switch_interval(1e-3):
        assert sys.getswitchinterval() == pytest.approx(1e-3)
        raise RuntimeError("boom")
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize("n, batch, chunk_rows", [(23, 5, 10), (20, 5, 10), (7, 10, 4), (9, 3, 1000)])
def test_shuffled_batches_yield_every_row_once_in_order_as_contiguous_views(n, batch, chunk_rows):
    rng = np.random.default_rng(0)
    x, labels = rng.uniform(size=(n, 3)).astype(np.float32), np.arange(n)
    order = rng.permutation(n)
    seen, sizes = [], []
    for xb, yb in loop.shuffled_batches((x, labels), order, batch, chunk_rows):
        assert xb.flags.c_contiguous and np.array_equal(xb, x[yb])  # rows stay with their labels
        seen += list(yb)
        sizes.append(len(yb))
    assert seen == list(order)
    assert sizes == [batch] * (n // batch) + ([n % batch] if n % batch else [])


def test_evaluate_scores_a_split_in_chunks_like_in_one_pass():
    x, y = tiny_problem(n=50)
    params = reference.init_params(8, np.random.default_rng(1))
    whole = metrics.evaluate(params, x, y)
    chunked = metrics.evaluate(params, x, y, chunk=7)
    assert whole[0] == pytest.approx(chunked[0], rel=1e-6) and whole[1] == chunked[1]
    assert np.array_equal(whole[2], chunked[2]) and np.array_equal(
        whole[2], reference.predict_proba(params, x).argmax(1)
    )


def test_a_progress_bar_interrupted_while_being_made_cleans_up_quietly():
    # Ctrl-C or SIGTERM can land inside tqdm's __init__; the half-made bar's __del__ then ran
    # tqdm's close() on attributes never set, printing a traceback after the run's error line.
    half_made = loop.Progress.__new__(loop.Progress)
    half_made.disable = False  # as tqdm's __init__ leaves it just before it sets `pos`
    half_made.__del__()  # no AttributeError (tqdm's own: 'object has no attribute pos')
    with loop.Progress(range(3), show=False) as bar:  # off the terminal: no bar at all
        assert list(bar) == [0, 1, 2] and bar.disable
