"""The normalize step on tiny generated IDX files: split, scaling, statistics, errors."""

import numpy as np
import pytest

from helpers import SOURCE, project_config, write_tiny_mnist
from mnist_np.data import splits
from mnist_np.data.idx import write_idx
from mnist_np.errors import DataError
from mnist_np.experiments import stages
from mnist_np.files import sha256_file


def test_prepare_splits_scales_and_records_checksums(tiny_mnist):
    raw_dir, cfg = tiny_mnist
    prepared, stats = splits.prepare(raw_dir, cfg.data, SOURCE)
    assert {k: len(s.y) for k, s in prepared.items()} == {"train": 100, "val": 20, "test": 40}
    for split in prepared.values():
        assert split.x.dtype == np.float32 and split.x.shape[1] == 784 and split.x.flags.c_contiguous
        assert split.x.min() >= 0.0 and split.x.max() == 1.0
    assert stats["sizes"] == {"train": 100, "val": 20, "test": 40}
    assert stats["raw_sha256"][SOURCE.files.train_images.name] == sha256_file(raw_dir / SOURCE.files.train_images.name)
    assert stats["mean"] == pytest.approx(float(prepared["train"].x.mean()), rel=1e-5)


def test_split_is_seeded_and_disjoint(tiny_mnist):
    raw_dir, cfg = tiny_mnist
    a, _ = splits.prepare(raw_dir, cfg.data, SOURCE)
    b, _ = splits.prepare(raw_dir, cfg.data, SOURCE)
    assert np.array_equal(a["val"].x, b["val"].x)
    other = type(cfg.data)(**{**cfg.data.__dict__, "split_seed": 1})
    c, _ = splits.prepare(raw_dir, other, SOURCE)
    assert not np.array_equal(a["val"].x, c["val"].x)
    train_rows = {row.tobytes() for row in a["train"].x}
    assert not any(row.tobytes() in train_rows for row in a["val"].x)


def test_standardize_uses_training_statistics_only(tiny_mnist):
    raw_dir, cfg = tiny_mnist
    std_cfg = type(cfg.data)(**{**cfg.data.__dict__, "standardize": True})
    prepared, stats = splits.prepare(raw_dir, std_cfg, SOURCE)
    train = prepared["train"].x
    assert abs(float(train.mean())) < 1e-5 and float(train.std()) == pytest.approx(1.0, rel=1e-4)
    assert prepared["test"].x.dtype == np.float32
    # The test split is transformed with the training statistics, so it is not exactly centred.
    assert abs(float(prepared["test"].x.mean())) > 1e-4


def test_save_and_load_round_trip_without_pickle(tiny_mnist, tmp_path):
    raw_dir, cfg = tiny_mnist
    prepared, stats = splits.prepare(raw_dir, cfg.data, SOURCE)
    splits.save(tmp_path / "processed", prepared, stats)
    back = splits.load(tmp_path / "processed", "val")
    assert np.array_equal(back.x, prepared["val"].x) and np.array_equal(back.y, prepared["val"].y)
    saved = splits.load_stats(tmp_path / "processed")
    assert {k: v for k, v in saved.items() if k != "processed_sha256"} == stats
    assert saved["processed_sha256"] == {
        f"{name}.npz": sha256_file(tmp_path / "processed" / f"{name}.npz") for name in ("train", "val", "test")
    }
    assert sorted(p.name for p in (tmp_path / "processed").iterdir()) == [
        "stats.json",
        "test.npz",
        "train.npz",
        "val.npz",
    ]


def test_runs_tag_their_data_with_the_checksums_normalize_recorded(tiny_mnist, tmp_path):
    raw_dir, cfg = tiny_mnist
    processed = tmp_path / "processed"
    splits.save(processed, *splits.prepare(raw_dir, cfg.data, SOURCE))
    sums = stages.data_checksums(processed)
    assert sums["train.npz"] == sha256_file(processed / "train.npz")
    assert sums["val.npz"] == sha256_file(processed / "val.npz")
    assert sums[SOURCE.files.train_images.name] == sha256_file(raw_dir / SOURCE.files.train_images.name)


def test_saving_the_same_data_twice_gives_the_same_bytes(tiny_mnist, tmp_path):
    # DVC hashes data/processed: identical data must give identical files, whenever it was written.
    raw_dir, cfg = tiny_mnist
    for name in ("a", "b"):
        splits.save(tmp_path / name, *splits.prepare(raw_dir, cfg.data, SOURCE))
    for name in ("train.npz", "val.npz", "test.npz", "stats.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_val_size_larger_than_the_data_is_rejected(tiny_mnist):
    raw_dir, cfg = tiny_mnist
    too_big = type(cfg.data)(**{**cfg.data.__dict__, "val_size": 120})
    with pytest.raises(DataError, match="data.val_size=120"):
        splits.prepare(raw_dir, too_big, SOURCE)


def test_mismatched_image_and_label_counts_are_rejected(tmp_path):
    paths = write_tiny_mnist(tmp_path)
    write_idx(paths["train_labels"], np.zeros(119, dtype=np.uint8))
    with pytest.raises(DataError, match="120 images but .* 119 labels"):
        splits.prepare(tmp_path, project_config().data, SOURCE)


def test_labels_outside_0_to_9_are_rejected(tmp_path):
    paths = write_tiny_mnist(tmp_path)
    write_idx(paths["test_labels"], np.full(40, 12, dtype=np.uint8))
    with pytest.raises(DataError, match="label 12"):
        splits.prepare(tmp_path, project_config().data, SOURCE)


def test_missing_raw_files_point_at_the_download_stage(tiny_mnist, tmp_path):
    _, cfg = tiny_mnist
    with pytest.raises(DataError, match="download stage"):
        splits.prepare(tmp_path / "empty", cfg.data, SOURCE)
