"""Fuzzing the file loaders (Hypothesis): any bytes give the right array or one DataError line,
never another exception, a hang or an allocation beyond the file's own size."""

import gzip
import io
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_np.data.idx import parse_idx, read_idx, write_idx
from mnist_np.errors import DataError
from mnist_np.files import save_npz
from mnist_np.model import reference, weights

# Twice Hypothesis's default number of examples (300 kept test-fast at its 20 s limit).
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def one_line(exc: DataError) -> bool:
    return "\n" not in str(exc) and str(exc)


def valid_idx() -> bytes:
    buffer = io.BytesIO()
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + np.asarray(array.shape, ">u4").tobytes()
    buffer.write(header + array.tobytes())
    return buffer.getvalue()


def mutated(original: bytes):
    """Strategy: the original bytes truncated, extended, or with some bytes replaced."""
    return st.one_of(
        st.integers(0, len(original)).map(lambda n: original[:n]),
        st.binary(max_size=64).map(lambda tail: original + tail),
        st.lists(st.tuples(st.integers(0, len(original) - 1), st.integers(0, 255)), min_size=1, max_size=8).map(
            lambda edits: bytes(dict(edits).get(i, b) for i, b in enumerate(original))
        ),
    )


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(valid_idx())))
def test_idx_bytes_parse_exactly_or_fail_with_one_line(raw):
    try:
        array = parse_idx(raw, "fuzz")
    except DataError as exc:
        assert one_line(exc)
        return
    # Accepted: the array re-encodes to exactly the bytes it came from.
    code = raw[2]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    assert header + array.astype(array.dtype.newbyteorder(">")).tobytes() == raw


def test_an_idx_header_claiming_exabytes_is_refused_without_allocating():
    raw = bytes([0, 0, 0x08, 3]) + np.asarray([2**32 - 1] * 3, ">u4").tobytes() + b"\0" * 16
    with pytest.raises(DataError, match="truncated"):
        parse_idx(raw)


def test_a_gzip_bomb_is_cut_off(tmp_path, monkeypatch):
    from mnist_np.data import idx

    monkeypatch.setattr(idx, "MAX_BYTES", 1 << 20)
    path = tmp_path / "bomb.idx.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, 1]) + np.asarray([4 << 20], ">u4").tobytes() + bytes(4 << 20))
    with pytest.raises(DataError, match="unpacks to more than"):
        read_idx(path)
    write_idx(tmp_path / "fine.idx.gz", np.zeros(10, np.uint8))
    assert read_idx(tmp_path / "fine.idx.gz").shape == (10,)


def valid_weights() -> bytes:
    params = reference.init_params(3, np.random.default_rng(0))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for key, value in params.items():
            with archive.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, value)
    return buffer.getvalue()


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(valid_weights())))
def test_weights_files_load_exactly_or_fail_with_one_line(tmp_path, raw):
    path = tmp_path / "model.npz"
    path.write_bytes(raw)
    try:
        params = weights.load(path)
    except DataError as exc:
        assert one_line(exc) and str(path) in str(exc)
        return
    assert params["W1"].shape == (784, 3) and params["W2"].shape == (3, 10)
    assert all(np.issubdtype(v.dtype, np.floating) for v in params.values())


@pytest.mark.parametrize(
    "arrays, problem",
    [
        ({"W1": np.zeros((10, 3)), "b1": np.zeros(3), "W2": np.zeros((3, 10)), "b2": np.zeros(10)}, "W1"),
        ({"W1": np.zeros((784, 3), int), "b1": np.zeros(3), "W2": np.zeros((3, 10)), "b2": np.zeros(10)}, "float"),
        ({"W1": np.zeros((784, 3)), "b1": np.zeros(3)}, "lacks"),
    ],
)
def test_weights_of_the_wrong_shape_or_type_are_refused_naming_the_fix(tmp_path, arrays, problem):
    save_npz(tmp_path / "model.npz", **arrays)
    with pytest.raises(DataError, match=problem) as caught:
        weights.load(tmp_path / "model.npz")
    assert "dvc repro --force train" in str(caught.value)


def test_a_header_asking_for_more_than_the_member_holds_is_refused(tmp_path):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.zeros(4))
    forged = buffer.getvalue().replace(b"(4,)", b"(9999999999,)")  # the header's own padding absorbs the length
    path = tmp_path / "model.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("W1.npy", forged)
    with pytest.raises(DataError, match="says"):
        weights.load(path)


def test_pickled_object_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "model.npz", W1=np.array([object()] * 3, dtype=object))
    with pytest.raises(DataError, match="pickle"):
        weights.load(tmp_path / "model.npz")
