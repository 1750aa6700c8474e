"""IDX reading and writing: round trips and rejection of malformed files."""

import gzip

import numpy as np
import pytest

from mnist_np.data.idx import parse_idx, read_idx, write_idx
from mnist_np.errors import DataError


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip(tmp_path, name, dtype):
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, array)


def test_header_is_big_endian_mnist_layout(tmp_path):
    write_idx(tmp_path / "labels.idx", np.array([7, 2, 1], dtype=np.uint8))
    assert (tmp_path / "labels.idx").read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])


def test_reads_the_real_mnist_test_labels(mnist_mirror):
    labels = read_idx(mnist_mirror / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,) and labels[:3].tolist() == [7, 2, 1]


@pytest.mark.parametrize(
    "raw, problem",
    [
        (bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2]), "truncated"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1, 9]), "longer than its header"),
        (bytes([1, 2, 8, 1, 0, 0, 0, 3, 7, 2, 1]), "bad IDX magic"),
        (bytes([0, 0, 0x42, 1, 0, 0, 0, 3, 7, 2, 1]), "bad IDX magic"),
        (bytes([0, 0, 8, 3, 0, 0]), "3 dimensions"),
        (b"\x00\x00", "too short"),
    ],
)
def test_malformed_files_are_rejected_with_the_reason(raw, problem):
    with pytest.raises(DataError, match=problem):
        parse_idx(raw, "x.idx")


def test_cut_off_gzip_stream_is_a_data_error(tmp_path):
    path = tmp_path / "a.idx.gz"
    write_idx(path, np.zeros((10, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="download it again"):
        read_idx(path)


def test_gzip_of_a_non_idx_file_is_rejected(tmp_path):
    path = tmp_path / "page.gz"
    path.write_bytes(gzip.compress(b"<html>not found</html>"))
    with pytest.raises(DataError, match="magic"):
        read_idx(path)
