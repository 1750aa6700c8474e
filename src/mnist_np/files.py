"""File helpers shared by every layer: checksums, all-or-nothing writes, reproducible .npz files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import DataError, UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; outputs get the mode any new file would.
FILE_MODE = 0o666 & ~_umask()


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A crash or error part-way leaves no half-written file under the final name. The temporary
    name keeps the final suffix, since some writers (np.savez) append their own otherwise.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    os.chmod(tmp, FILE_MODE)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def require_writable(folder: str | os.PathLike, what: str, fix: str) -> None:
    """Before long work that ends by writing `what` into `folder`: write and remove a probe file in
    it, or in its nearest existing parent if it does not exist yet (creating nothing that stays);
    else a UserError naming the folder, the reason and `fix`."""
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UserError(f"cannot write {what} to {folder} ({exc.strerror or exc}); {fix}") from exc


def write_json(path: str | os.PathLike, data: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """np.savez, atomically, with the same bytes for the same arrays: np.savez stamps each member
    with the current time, which would change DVC's hash of identical data on every run."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(member, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(array), allow_pickle=False)


MAX_NPZ_BYTES = 1 << 30  # far above MNIST's largest file (~175 MB); a bound on what a corrupt header can ask for


def _check_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Raise ValueError unless the member is a plain .npy array whose header matches its size:
    a corrupt or hostile header must not make np.load allocate what the file does not hold."""
    if info.file_size > MAX_NPZ_BYTES:
        raise ValueError(f"{info.filename} would unpack to {info.file_size} bytes, more than {MAX_NPZ_BYTES}")
    with archive.open(info) as member:
        try:
            major, _ = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(member)
        except Exception as exc:  # numpy parses the header with Python's tokenizer: any error means corrupt
            raise ValueError(f"{info.filename} has no valid .npy header ({type(exc).__name__})") from exc
        if dtype.hasobject:
            raise ValueError(f"{info.filename} holds Python objects (a pickle), not numbers")
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if member.tell() + size != info.file_size:
            raise ValueError(f"{info.filename} says {shape} {dtype} but holds {info.file_size - member.tell()} bytes")


def load_npz(path: str | os.PathLike, fix: str) -> dict[str, np.ndarray]:
    """Every array of an .npz file, without pickle. Anything else (missing, not an .npz, truncated,
    corrupt, object arrays) is a DataError naming the file and `fix`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; {fix}")
    try:
        with zipfile.ZipFile(path) as archive:
            arrays = {}
            for info in archive.infolist():
                _check_member(archive, info)
                with archive.open(info) as member:
                    arrays[info.filename.removesuffix(".npy")] = np.lib.format.read_array(member, allow_pickle=False)
            return arrays
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError, zlib.error) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path} is not a readable .npz file ({reason}); {fix}") from exc
