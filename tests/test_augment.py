"""Training-time distortions (training/augment.py): identity at zero, seeded, a different draw each
time, the Gaussian smoothing, the config's checks, bit-identical augmented training, and (on real
MNIST) that a distorted digit still reads as the same digit."""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np
import psutil
import pytest
from mlflow.tracking import MlflowClient

from helpers import Trained, project_config, tiny_problem, trained_once
from mnist_np.config import AugmentConfig
from mnist_np.data import splits
from mnist_np.errors import ConfigError
from mnist_np.model import reference, weights
from mnist_np.training import augment, loop

ON = AugmentConfig(True, rotation=10, scale=0.1, shear=10, shift=2, elastic_alpha=34, elastic_sigma=4)
ZERO = AugmentConfig(True, rotation=0, scale=0, shear=0, shift=0, elastic_alpha=0, elastic_sigma=4)


def digits(n: int = 64, seed: int = 0) -> np.ndarray:
    """Blob-like 28x28 images (float32 rows): a few bright strokes on a blank background."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.float32)
    for image in images:
        for _ in range(3):
            r, c = rng.integers(6, 22, 2)
            image[r - 2 : r + 3, c - 1 : c + 2] = rng.uniform(0.5, 1.0)
    return images.reshape(n, 784)


def distorted(images: np.ndarray, cfg: AugmentConfig, seed: int = 0, fill: float = 0.0) -> np.ndarray:
    out = images.copy()
    augment.Distorter(cfg, 28, fill, np.random.default_rng(seed))(out)
    return out


@pytest.mark.parametrize("fill", [0.0, -0.42])  # [0, 1] pixels, and standardized ones
def test_all_ranges_at_zero_give_the_images_back_unchanged(fill):
    images = digits() + np.float32(fill)
    assert np.array_equal(distorted(images, ZERO, fill=fill), images)


@pytest.mark.parametrize("field", ["rotation", "scale", "shear", "shift", "elastic_alpha"], ids=lambda f: f"{f} alone")
def test_each_distortion_alone_moves_the_ink_and_keeps_it(field):
    cfg = dataclasses.replace(ZERO, **{field: getattr(ON, field)})
    images = digits()
    out = distorted(images, cfg)
    assert out.dtype == np.float32 and out.shape == images.shape
    assert not np.array_equal(out, images)
    # Bilinear reads of a blank-bordered image: values stay in the input's range, and most ink stays.
    assert out.min() >= 0 and out.max() <= images.max()
    kept = out.sum(axis=1) / images.sum(axis=1)
    assert np.median(kept) > 0.8, f"{field}: only {np.median(kept):.2f} of the ink kept"


def test_the_same_seed_gives_the_same_distortions_and_each_call_new_ones():
    images = digits()
    assert np.array_equal(distorted(images, ON, seed=3), distorted(images, ON, seed=3))
    assert not np.array_equal(distorted(images, ON, seed=3), distorted(images, ON, seed=4))
    d = augment.Distorter(ON, 28, 0.0, np.random.default_rng(0))
    first, second = images.copy(), images.copy()
    d(first)
    d(second)
    assert not np.array_equal(first, second)  # the next epoch's copy of a digit differs


def test_elastic_fields_drawn_in_the_eigenbasis_match_smoothed_uniform_noise():
    """The fast draw (module docstring) against the paper's recipe written out: uniform noise in
    [-1, 1] smoothed by the Gaussian (zero outside), times alpha. Same spread, same smoothness,
    same fall-off towards the border."""
    n, fields = 28, 4000
    g = augment.gaussian_matrix(n, ON.elastic_sigma)
    noise = np.random.default_rng(1).uniform(-1, 1, (fields, n, n))
    direct = ON.elastic_alpha * (g @ noise @ g.T)
    distorter = augment.Distorter(ON, n, 0.0, np.random.default_rng(2))
    draws = [distorter.displacements(augment.BLOCK) for _ in range(fields // (2 * augment.BLOCK))]
    fast = np.concatenate(draws).reshape(-1, n, n)  # each image's two fields (rows, columns)
    assert fast.dtype == np.float32
    for a, b in ((direct, fast), (direct[:, 2:-2, 2:-2], fast[:, 2:-2, 2:-2]), (direct[:, 0], fast[:, 0])):
        np.testing.assert_allclose(np.sqrt(np.mean(b**2)), np.sqrt(np.mean(a**2)), rtol=0.03)
    for lag in (1, 4, 8):  # correlation of displacements `lag` pixels apart along a row
        corr = [np.mean(f[:, :, :-lag] * f[:, :, lag:]) / np.mean(f**2) for f in (direct, fast)]
        assert abs(corr[0] - corr[1]) < 0.03, (lag, corr)
    assert 1.0 < float(np.sqrt(np.mean(fast[:, 10:18, 10:18] ** 2))) < 2.0  # about 1.4 pixels inside


def test_out_of_range_settings_name_the_key():
    with pytest.raises(ConfigError, match=r"train\.augment\.rotation=120"):
        project_config("train.augment.rotation=120")
    with pytest.raises(ConfigError, match=r"train\.augment\.elastic_sigma"):
        project_config("train.augment.elastic_sigma=0")


def test_non_square_inputs_are_refused_with_the_fix():
    cfg = project_config("train.augment.enabled=true")
    with pytest.raises(ConfigError, match="square images.*train.augment.enabled=false"):
        loop.check_feasible(cfg.model, cfg.train, 100, 780)


def test_augmented_training_is_bit_identical_across_runs_and_off_means_untouched():
    x, y = tiny_problem(n=300)
    cfg = project_config("train.augment.enabled=true", "train.epochs=3", "train.batch_size=16", "model.hidden_size=12")

    def fit(augment_cfg: AugmentConfig) -> dict:
        return loop.fit(
            x, y, x[:50], y[:50], cfg.model, dataclasses.replace(cfg.train, augment=augment_cfg), progress=False
        ).params

    first, second = fit(cfg.train.augment), fit(cfg.train.augment)
    plain, identity = fit(dataclasses.replace(ZERO, enabled=False)), fit(ZERO)
    for key in first:
        assert np.array_equal(first[key], second[key]), key
        assert np.array_equal(plain[key], identity[key]), key  # distortions of zero change no step
    assert not np.array_equal(plain["W1"], first["W1"])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to move between")
def test_the_distorting_process_follows_the_trainers_share_of_the_cores():
    allowed = os.sched_getaffinity(0)
    images = digits(8)
    with augment.Worker(images, ON, 0.0, np.random.default_rng(0), 4) as worker:
        (child,) = psutil.Process().children()
        try:
            for cores in ({min(allowed)}, {max(allowed)}, allowed):  # as cores.Share pins the trainer
                os.sched_setaffinity(0, cores)
                next(iter(worker([np.arange(4)])))
                assert child.cpu_affinity() == sorted(cores)
        finally:
            os.sched_setaffinity(0, allowed)


@pytest.fixture(scope="session")
def augmented(tmp_path_factory, worker_id, mnist_mirror) -> Trained:
    """conf/experiment/augmented.yaml shortened to 3 of its epochs and a quarter of its hidden units,
    through the train stage (the full run, 13-20 minutes, is not part of the suite; docs/accuracy.md
    has its results)."""
    shortened = ("train.epochs=3", "model.hidden_size=512")
    return trained_once(tmp_path_factory, worker_id, mnist_mirror, "augmented", "+experiment=augmented", *shortened)


@pytest.mark.slow
def test_the_99_percent_configuration_shortened_trains_with_distortions(augmented):
    """The run records the distortions it trained with, and the network already reads the untouched
    test digits."""
    params = MlflowClient(augmented.uri).get_run(augmented.run_id).data.params
    assert params["train.augment.enabled"] == "True" and float(params["train.augment.elastic_alpha"]) > 0
    with open(augmented.root / "training.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    assert augmented.test_accuracy() >= 0.97


@pytest.mark.slow
def test_a_distorted_digit_still_reads_as_the_same_digit(augmented):
    """Label-preserving: the network trained with the configuration's distortions reads 1,000 test
    digits, distorted the same way, as it reads them untouched (where it reads those right). The
    shortened run (97.5% on the test set) agrees on about 92%; a distortion that broke digits (a
    flipped axis, a wrong centre) would leave far fewer. The full run reads 97.5% of its distorted
    training digits right."""
    test = splits.load(augmented.root / "data" / "processed", "test")
    cfg = project_config("+experiment=augmented").train.augment
    x, y = test.x[:1000], test.y[:1000]
    params = weights.load(augmented.root / "models" / "model.npz")
    before = reference.predict_proba(params, x).argmax(axis=1)
    after = reference.predict_proba(params, distorted(x, cfg, fill=float(test.x.min()))).argmax(axis=1)
    right = before == y
    agree = float(np.mean(after[right] == before[right]))
    assert agree >= 0.9, f"only {agree:.1%} of correctly read digits read the same after distortion"
