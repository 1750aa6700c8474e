"""Where a sweep job's project and prepared data are: the checkout the sweep belongs to (also from a
Ray worker elsewhere), data/processed/ fetched from the DVC remote on a node that lacks it, and
checked against the job's data settings."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from filelock import FileLock
from omegaconf import DictConfig

from .. import config
from ..data import splits
from ..errors import DataError, UserError
from ..files import sha256_file
from ..tracking import store
from . import ROOT_ENV

log = logging.getLogger(__name__)
PROCESSED_DIR = Path("data") / "processed"


def project_root(hydra_cfg: DictConfig) -> Path:
    """The project a sweep belongs to. The launching process decides and tells its jobs through
    $MNIST_NP_ROOT (a Ray worker starts in its node's own directory): the checkout it runs in (or a
    folder with data/processed/ of its own), else, started from anywhere, the checkout holding the
    conf/ the sweep was composed from."""
    given = os.environ.get(ROOT_ENV)
    if given and Path(given).is_dir():
        return Path(given)
    here = store.repo_root()
    if (here / "dvc.yaml").is_file() or (here / PROCESSED_DIR).is_dir():
        return here
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "main" and source.schema == "file":
            return store.repo_root(Path(source.path).parent)
    return here


def fetch_processed(root: Path) -> None:
    """On a node whose checkout lacks data/processed/ (a Ray worker on another machine), get the
    prepared data from the DVC remote by the hashes dvc.lock records, then check each file against
    the SHA-256 the normalize stage recorded in stats.json (DVC does not re-hash what it downloads
    unless the remote says `verify = true`). Jobs starting together on one node pull once: the
    others wait for the first (a lock in .dvc/tmp), then find the data there. Damaged data is
    removed, from the checkout and from the node's DVC cache, never trained on."""
    processed = root / PROCESSED_DIR
    if (processed / splits.STATS_FILE).is_file() or not (root / "dvc.lock").is_file():
        return
    lock = root / ".dvc" / "tmp" / "mnist-np-pull.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock):
        if not (processed / splits.STATS_FILE).is_file():  # else another job pulled it meanwhile
            _pull(root, processed)
    recorded = splits.load_stats(processed)["processed_sha256"]
    damaged = [name for name, digest in recorded.items() if sha256_file(processed / name) != digest]
    if damaged:
        _forget_cached(root, damaged)
        shutil.rmtree(processed, ignore_errors=True)
        raise DataError(
            f"{', '.join(damaged)} pulled from the DVC remote into {processed} do not match the SHA-256 recorded "
            "when the data was prepared (removed again, also from this node's DVC cache); the remote's copy is "
            "damaged: `dvc push` it again from a good copy, or run `dvc repro normalize` here"
        )


def _pull(root: Path, processed: Path) -> None:
    log.info("%s is not on this node: dvc pull from the remote", processed)
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"
    done = subprocess.run([dvc, "pull", str(PROCESSED_DIR)], cwd=root, capture_output=True, text=True)
    if done.returncode:
        said = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        reason = next((line for line in said if line.startswith("ERROR")), said[-1] if said else "no output")
        raise DataError(
            f"{processed} is missing and `dvc pull` could not get it ({reason}); run "
            "`dvc push` where the data was prepared, or `dvc repro normalize` here"
        )


def _forget_cached(root: Path, names: list[str]) -> None:
    """Remove the DVC cache's copies of these files of data/processed/, so that the next pull
    fetches them again instead of checking out the damaged copy: the cache keeps each file under
    the MD5 the directory's listing (`<md5>.dir`, named in dvc.lock) gives it."""
    import yaml

    cache = root / ".dvc" / "cache" / "files" / "md5"
    outs = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["normalize"]["outs"]
    listing_md5 = next(out["md5"] for out in outs if out["path"] == str(PROCESSED_DIR))
    listing = json.loads((cache / listing_md5[:2] / listing_md5[2:]).read_text())
    for entry in listing:
        if entry["relpath"] in names:
            (cache / entry["md5"][:2] / entry["md5"][2:]).unlink(missing_ok=True)


def processed_dir(root: Path, cfg: config.Config) -> tuple[Path, dict]:
    """data/processed/ and its statistics, checked against the job's data settings: a sweep trains
    on the data the normalize stage prepared and cannot change how it was prepared."""
    processed = root / PROCESSED_DIR
    stats = splits.load_stats(processed)  # a clear error naming `dvc repro normalize` when it is missing
    prepared = {"data.standardize": stats["standardize"], "data.val_size": stats["sizes"]["val"]}
    wanted = {"data.standardize": cfg.data.standardize, "data.val_size": cfg.data.val_size}
    if prepared != wanted:
        differ = ", ".join(f"{k}={wanted[k]} (prepared: {prepared[k]})" for k in wanted if wanted[k] != prepared[k])
        raise UserError(
            f"{processed} was prepared with other data settings: {differ}. Sweep only model.* and "
            "train.* here, or prepare the data first (make params ARGS=... && dvc repro normalize)"
        )
    return processed, stats
