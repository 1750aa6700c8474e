"""Fetch the MNIST files from the first source that delivers them with the published SHA-256.

Sources are tried in order: $MNIST_MIRROR (a directory or base URL) when set, then the
configured mirrors. Each attempt streams into a temporary file beside the target and is renamed
into place only after its checksum matches, so a bad or partial download never stays behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from ..config import DatasetSource, FileSpec
from ..errors import DownloadError
from ..files import atomic_path, sha256_file

log = logging.getLogger(__name__)
MIRROR_ENV = "MNIST_MIRROR"


def sources(mirrors: Sequence[str], env: Mapping[str, str] = os.environ) -> list[str]:
    """$MNIST_MIRROR first (when set), then the configured mirrors."""
    return ([env[MIRROR_ENV]] if env.get(MIRROR_ENV) else []) + list(mirrors)


def file_url(source: str, name: str) -> str:
    """URL of `name` under a base URL or a local directory."""
    if "://" in source:
        return source.rstrip("/") + "/" + name
    return (Path(source).expanduser().resolve() / name).as_uri()


def fetch(url: str, dest: Path, sha256: str, timeout: float, progress: bool = True) -> None:
    """Download one URL to `dest`, accepting it only if its SHA-256 matches."""
    digest = hashlib.sha256()
    with atomic_path(dest) as tmp, urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
        total = response.headers.get("Content-Length")
        with tqdm(
            total=int(total) if total else None,
            unit="B",
            unit_scale=True,
            desc=dest.name,
            disable=None if progress else True,  # None: on a terminal only (tqdm's rule), not in logs
            leave=False,
        ) as bar:
            while block := response.read(1 << 16):
                out.write(block)
                digest.update(block)
                bar.update(len(block))
        out.close()
        if digest.hexdigest() != sha256:
            raise ValueError(f"checksum mismatch: got sha256 {digest.hexdigest()}, expected {sha256}")


def download(
    spec: FileSpec,
    dest_dir: Path,
    srcs: Sequence[str],
    cfg: DatasetSource,
    sleep: Callable[[float], None] = time.sleep,
    progress: bool = True,
) -> str:
    """Put one verified file into `dest_dir`; return the source it came from."""
    dest = dest_dir / spec.name
    if dest.is_file() and sha256_file(dest) == spec.sha256:
        return "already present"
    failures = []
    for source in srcs:
        url = file_url(source, spec.name)
        for attempt in range(1, cfg.retries + 1):
            try:
                fetch(url, dest, spec.sha256, cfg.timeout_s, progress)
                log.info("%s: verified from %s", spec.name, url)
                return source
            except (OSError, ValueError) as exc:  # URLError, timeouts and HTTP errors are OSErrors
                reason = f"{type(exc).__name__}: {exc}"
                log.warning("%s: attempt %d/%d from %s failed: %s", spec.name, attempt, cfg.retries, url, reason)
                # A missing local file will not appear on retry; a network hiccup might.
                if url.startswith("file:") and isinstance(exc, FileNotFoundError):
                    break
                if attempt < cfg.retries:
                    sleep(cfg.backoff_s * 2 ** (attempt - 1))
        failures.append(f"{url}: {reason}")
    raise DownloadError(
        f"could not get {spec.name} with sha256 {spec.sha256} from any source ({'; '.join(failures)}); "
        f"check the network, or point {MIRROR_ENV} at a directory or URL that holds the original files"
    )


def download_all(
    cfg: DatasetSource, dest_dir: str | os.PathLike, env: Mapping[str, str] = os.environ, progress: bool = True
) -> dict[str, str]:
    """Download and verify the four MNIST files; return {file name: source used}."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    srcs = sources(cfg.mirrors, env)
    specs = [cfg.files.train_images, cfg.files.train_labels, cfg.files.test_images, cfg.files.test_labels]
    return {spec.name: download(spec, dest_dir, srcs, cfg, progress=progress) for spec in specs}
