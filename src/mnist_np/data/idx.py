"""Read and write IDX files, the format MNIST is published in.

An IDX file is a big-endian header - two zero bytes, a type code, the number of
dimensions, then one uint32 per dimension - followed by the values in C order.
Files ending in ``.gz`` are (de)compressed transparently.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

# IDX type code -> big-endian dtype.
_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in _TYPES.items()}
MAX_BYTES = 1 << 30  # MNIST's largest file unpacks to 47 MB; a corrupt or hostile one stops here


def _open(path: Path, mode: str):
    return gzip.open(path, mode) if path.suffix == ".gz" else open(path, mode)


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one IDX file; `name` only labels error messages."""
    if len(raw) < 4:
        raise DataError(f"{name}: {len(raw)} bytes is too short for an IDX header; the file is truncated")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise DataError(
            f"{name}: bad IDX magic number 0x{raw[:4].hex()} (expected 0x0000TTNN with a known type TT); "
            "this is not an IDX file - download it again"
        )
    dtype, ndim = _TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{name}: IDX header declares {ndim} dimensions but the file ends at byte {len(raw)}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(shape) * dtype.itemsize  # Python ints: a hostile header cannot overflow it
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"{name}: IDX header says shape {shape} ({expected} bytes) but the file has {len(raw)} bytes; "
            f"the file is {problem} - download it again"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a native-endian array."""
    path = Path(path)
    try:
        with _open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:  # gzip raises these for corrupt or cut-off streams
        raise DataError(f"{path}: cannot read ({exc}); download it again") from exc
    if len(raw) > MAX_BYTES:
        raise DataError(f"{path}: unpacks to more than {MAX_BYTES} bytes, far more than MNIST; download it again")
    return parse_idx(raw, str(path))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write `array` as an IDX file (gzipped when the name ends in .gz)."""
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with _open(Path(path), "wb") as f:
        f.write(header + array.astype(_TYPES[code]).tobytes())
