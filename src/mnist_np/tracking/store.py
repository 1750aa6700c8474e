"""Where MLflow runs go: the store every entry point shares, and the experiment in it.

One store for every entry point: $MLFLOW_TRACKING_URI when set, else
sqlite:///<repository root>/mlflow.db; an SQLite store keeps artifacts in mlartifacts/ beside it.
DVC runs queued experiments in copies under <repo>/.dvc/tmp/exps/; the repository root is
resolved past that, so those runs land in the same store as everything else.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shlex
import shutil
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from .. import config, files
from ..errors import UserError
from . import liveness

log = logging.getLogger(__name__)
STORE_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
_DVC_TEMP = (".dvc", "tmp", "exps")
SERVER_TIMEOUT_S = 10
EXPERIMENT_KIND = "mlflow.experimentKind"


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The repository a run belongs to, even when DVC runs it in a temporary copy."""
    path = Path(start or os.environ.get("DVC_ROOT") or Path.cwd()).resolve()
    parts = path.parts
    for i in range(len(parts) - len(_DVC_TEMP)):
        if parts[i : i + len(_DVC_TEMP)] == _DVC_TEMP:
            return Path(*parts[:i])
    for candidate in (path, *path.parents):
        if (candidate / "dvc.yaml").is_file():
            return candidate
    return path


def tracking_uri(root: Path | None = None) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root or repo_root()) / STORE_FILE}"


def use_store(root: Path | None = None, wait_s: float = 0) -> str:
    """Point MLflow at the project store, after the quick check that it can work (check_store,
    waiting up to `wait_s` for a server that does not answer); return its URI. Every command that
    talks to the store starts here."""
    uri = tracking_uri(root)
    check_store(uri, wait_s)
    mlflow.set_tracking_uri(uri)  # note: this also exports MLFLOW_TRACKING_URI to the environment
    return uri


def check_store(uri: str, wait_s: float = 0) -> None:
    """Fail fast, before any training, on a store that cannot work: an SQLite file in a folder that
    does not exist (MLflow would create a new store elsewhere) or that is damaged (SQLite's quick
    check: ~2 ms per MB), or a server that does not answer (MLflow would retry for minutes) within
    `wait_s` seconds of trying again with backoff (a sweep job: the server may be restarting)."""
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme == "sqlite":
        path = _sqlite_path(uri)
        if not path.parent.is_dir():
            raise UserError(
                f"the folder of the MLflow store {uri} does not exist; create {path.parent} "
                "or set MLFLOW_TRACKING_URI to an existing store"
            )
        if path.is_file():
            problem = _sqlite_damage(path)
            if problem:
                raise UserError(
                    f"the MLflow store {path} is damaged ({problem}); see what is wrong with "
                    f"sqlite3 {shlex.quote(str(path))} 'PRAGMA integrity_check', then restore it from a "
                    "backup or set MLFLOW_TRACKING_URI to another store"
                )
    elif scheme in ("http", "https"):
        start, delay = time.monotonic(), 1.0
        while True:
            try:
                with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=_server_timeout()):
                    return
            except (OSError, ValueError) as exc:
                reason, waited = getattr(exc, "reason", exc), time.monotonic() - start
                if waited + delay > wait_s:
                    raise UserError(
                        f"the MLflow tracking server {uri} does not answer ({reason})"
                        + (f" after {waited:.0f} s of trying" if wait_s else "")
                        + "; start it, or set MLFLOW_TRACKING_URI to a reachable store"
                    ) from exc
                log.warning(
                    "the MLflow tracking server %s does not answer (%s); trying again in %.0f s (for at most %.0f s)",
                    uri,
                    reason,
                    delay,
                    wait_s,
                )
                time.sleep(delay)
                delay = min(2 * delay, 30.0)


def _server_timeout() -> float:
    """How long the store check waits for a server: MLflow's own request timeout if the user set a
    shorter one (MLFLOW_HTTP_REQUEST_TIMEOUT), else SERVER_TIMEOUT_S."""
    try:
        return min(SERVER_TIMEOUT_S, float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", SERVER_TIMEOUT_S)))
    except ValueError:
        return SERVER_TIMEOUT_S


def _sqlite_damage(path: Path) -> str | None:
    """What SQLite's quick check finds wrong with the database at `path`, or None. Read only, unless
    a process killed in the middle of writing left its journal behind: SQLite then has to roll that
    write back before anything can be read (as the next writer would), which a read-only connection
    may not do ("attempt to write a readonly database")."""
    for mode in ("?mode=ro", ""):
        try:
            with contextlib.closing(sqlite3.connect(f"{path.as_uri()}{mode}", uri=True, timeout=60)) as db:
                found = [row[0] for row in db.execute("PRAGMA quick_check").fetchmany(3)]
        except sqlite3.OperationalError as exc:
            if mode and "readonly" in str(exc) and os.access(path, os.W_OK):
                continue  # a hot journal: open it as a writer would
            return str(exc)
        except sqlite3.DatabaseError as exc:
            return str(exc)
        return None if found == ["ok"] else " ".join("; ".join(found).split())  # SQLite's report spans lines
    return None


def check_writable(uri: str) -> None:
    """For commands that write runs: an SQLite store (the file and its folder, where SQLite keeps
    its journal and we keep a lock) this user can write."""
    if not uri.startswith("sqlite:"):
        return
    path = _sqlite_path(uri)
    for needed in (path, path.parent):
        if needed.exists() and not os.access(needed, os.W_OK):
            raise UserError(
                f"the MLflow store {path} cannot be written by this user ({needed} is read-only for it); "
                "ask its owner for write access, or set MLFLOW_TRACKING_URI to a store of your own"
            )


def _sqlite_path(uri: str) -> Path:
    return Path(uri.removeprefix("sqlite:///")).absolute()


def check_artifacts_writable(location: str) -> None:
    """Write and remove a probe file where a local store keeps artifacts, before any training."""
    if urllib.parse.urlparse(location).scheme not in ("", "file"):
        return  # a server or an object store: it checks its own permissions
    folder = Path(urllib.request.url2pathname(urllib.parse.urlparse(location).path))
    files.require_writable(folder, "MLflow artifacts", "make it writable or set MLFLOW_TRACKING_URI to another store")


def setup(experiment: str, root: Path | None = None, wait_s: float = 0) -> str:
    """Point MLflow at the project store (waiting up to `wait_s` for a server: check_store) and make
    sure `experiment` exists and can take artifacts; return its id.

    A new experiment in an SQLite store keeps its artifacts beside the database (not in ./mlruns
    of whatever directory a job happens to run in); a tracking server chooses its own.
    """
    uri = use_store(root or repo_root(), wait_s)
    check_writable(uri)
    with _one_process_at_a_time(uri):
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            location = None
            if uri.startswith("sqlite:"):
                location = (_sqlite_path(uri).parent / ARTIFACT_DIR / experiment).as_uri()
            unless_another_client_did(
                lambda: client.create_experiment(experiment, artifact_location=location),
                lambda: client.get_experiment_by_name(experiment) is not None,
            )
            found = client.get_experiment_by_name(experiment)
        if EXPERIMENT_KIND not in found.tags:  # the UI then opens on the runs table, not the GenAI overview
            unless_another_client_did(
                lambda: client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND, "custom_model_development"),
                lambda: EXPERIMENT_KIND in client.get_experiment(found.experiment_id).tags,
            )
    if found.lifecycle_stage == "deleted":
        raise UserError(
            f"MLflow experiment {experiment!r} is deleted in {uri}; restore it "
            f"(mlflow experiments restore) or choose another tracking.experiment"
        )
    check_artifacts_writable(found.artifact_location)
    liveness.close_dead_runs(MlflowClient(uri), [found.experiment_id])
    return found.experiment_id


def unless_another_client_did(write: Callable[[], object], done: Callable[[], bool]) -> None:
    """`write`, unless a server did it for another client between our lookup and the write (two sweeps
    started together on a new experiment: the second insert of a row breaks a unique key); if `done()`
    does not hold afterwards either, the failure is real (a full disk) and is raised."""
    try:
        write()
    except mlflow.exceptions.MlflowException:
        if not done():
            raise


@contextlib.contextmanager
def _one_process_at_a_time(uri: str) -> Iterator[None]:
    """For an SQLite store, hold a lock beside the database: MLflow creates a new store's tables on
    first use, and two processes doing that at once (two sweeps started together) break each other.
    A new store gets its tables here, from a template (`_with_mlflow_tables`)."""
    if not uri.startswith("sqlite:"):
        yield
        return
    # MLflow imports its SQL store (~1 s) on first use: done here, so processes starting together
    # (a sweep's joblib workers) import it side by side instead of one after another under the lock.
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    path = _sqlite_path(uri)
    with _locked(f"{path}.lock"):
        if not path.is_file():
            _with_mlflow_tables(path)
        yield


@contextlib.contextmanager
def _locked(lock_file: str) -> Iterator[None]:
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _with_mlflow_tables(path: Path) -> None:
    """Create the SQLite store `path` as a copy of an empty one that has MLflow's tables, migrated once
    per MLflow version and kept in the user's cache ($XDG_CACHE_HOME/mnist-np): MLflow's migrations of
    a new store take ~1.5 s, a copy milliseconds, and a sweep's jobs wait for its store. MLflow adds its
    Default experiment when it first opens the copy. Where the cache cannot be written, MLflow
    migrates the new store itself."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables  # private: tests/test_private_apis.py

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mnist-np"
    template = cache / f"mlflow-{mlflow.__version__}-tables.db"
    try:
        if not template.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            with _locked(f"{template}.lock"):
                if not template.is_file():
                    with files.atomic_path(template) as building:
                        engine = sqlalchemy.create_engine(f"sqlite:///{building}")
                        try:
                            _initialize_tables(engine)
                        finally:
                            engine.dispose()
        with files.atomic_path(path) as copy:
            shutil.copyfile(template, copy)
    except (OSError, sqlalchemy.exc.SQLAlchemyError) as exc:
        log.debug("no template for the new MLflow store %s (%s): MLflow creates its tables", path, exc)


def project_experiment(root: Path | None = None) -> str:
    """The experiment the pipeline logs to: tracking.experiment in the repository's params.yaml."""
    params = (root or repo_root()) / "params.yaml"
    if not params.is_file():
        raise UserError(
            f"{params} not found, so the project's experiment is unknown; run from the repository "
            "or name the experiment (--experiment)"
        )
    return config.load_params(params).tracking.experiment
