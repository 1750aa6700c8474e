"""The MNIST-style preprocessing of user images."""

import numpy as np
import pytest
from PIL import Image

from mnist_np.data.idx import read_idx
from mnist_np.errors import DataError
from mnist_np.serving import preprocess


def test_preprocessing_leaves_an_mnist_digit_unchanged(mnist_mirror):
    # MNIST digits already went through this procedure, so it must be the identity on them.
    images = read_idx(mnist_mirror / "t10k-images-idx3-ubyte.gz")[:300]
    for array in images:
        assert np.array_equal(preprocess.to_mnist(array.astype(np.float32)), array)


def test_preprocessing_normalises_polarity_size_and_position():
    digit = np.zeros((60, 30), dtype=np.float32)
    digit[5:55, 10:20] = 255  # a tall bar, off-centre in a non-square image
    out = preprocess.to_mnist(255 - digit)  # dark on light
    rows, cols = np.nonzero(out)
    assert out.shape == (28, 28) and np.ptp(rows) + 1 == 20  # longest side scaled to 20
    total = out.sum()
    assert abs((out.sum(axis=1) * np.arange(28)).sum() / total - 14) <= 0.5
    assert abs((out.sum(axis=0) * np.arange(28)).sum() / total - 14) <= 0.5
    with pytest.raises(DataError, match="no ink"):
        preprocess.to_mnist(np.full((20, 20), 200, dtype=np.float32))


def test_transparent_background_counts_as_paper_and_format_is_reported(tmp_path):
    image = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (20, 5, 30, 45))  # an opaque black bar on a transparent background
    image.save(tmp_path / "bar.png")
    gray, fmt = preprocess.load_gray(tmp_path / "bar.png")
    assert fmt == "PNG" and gray[0, 0] == 255 and gray[25, 25] == 0
    assert preprocess.load_digit(tmp_path / "bar.png").max() == 255


def test_unreadable_files_name_the_file(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not really a png")
    with pytest.raises(DataError, match="x.png: not a readable image"):
        preprocess.load_digit(tmp_path / "x.png")


def test_directories_expand_to_their_files(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ("b.png", "a.png", ".hidden"):
        (tmp_path / "d" / name).write_bytes(b"")
    assert [p.name for p in preprocess.image_files([tmp_path / "d", tmp_path / "z.jpg"])] == ["a.png", "b.png", "z.jpg"]
