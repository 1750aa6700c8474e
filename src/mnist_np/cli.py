"""What every entry point shares: logging, stopping cleanly on a signal, and one line per failure.

A foreseeable failure ends in one line `error: ...` naming the problem and the fix, no traceback,
and an exit status that tells failures apart:

    2    bad input (UserError: parameters, files, the tracking store)
    3    training diverged (TrainingError)
    130  interrupted (Ctrl-C, SIGINT)
    143  terminated (SIGTERM: kill, timeout, a CI cancel, a scheduler, or the parent DVC process dying)

SIGTERM is turned into the same exception as Ctrl-C, so a run stopped either way unwinds the same
path: finished epochs are flushed to MLflow, the run ends KILLED, half-written files are removed.
A full disk, a read-only file system and a full, read-only or damaged SQLite store are one line too.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import processes
from .errors import TrainingError, UserError, known_failure

EXIT_USER_ERROR, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 3, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so it unwinds like Ctrl-C."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def stop_on_sigterm() -> None:
    """Make SIGTERM raise Terminated in the main thread (a no-op elsewhere, where Python forbids it)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def _dvc_ancestor(levels: int = 3) -> int | None:
    """The pid of the `dvc` process this one runs under (its parent, or the shell's parent), if any."""
    for parent in processes.ancestors()[:levels]:
        try:
            if any(Path(arg).name == "dvc" for arg in parent.cmdline()[:2]):
                return parent.pid
        except processes.psutil.Error:  # gone, or not ours to read
            return None
    return None


def stop_with_dvc(interval_s: float = 1.0) -> None:
    """SIGTERM this process when the `dvc` process that started it ends: a stopped `dvc repro`
    must not leave its stage training and writing outputs behind its back (DVC does not pass
    its own SIGTERM on)."""
    dvc, parent = _dvc_ancestor(), os.getppid()
    if dvc is None:
        return

    def watch() -> None:
        while processes.alive(dvc) and os.getppid() == parent:
            time.sleep(interval_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="dvc-watch", daemon=True).start()


TRAINING_STOPPED = "finished epochs are in MLflow, the run is marked KILLED"
# DVC removes a stage's outputs before running it; after a failure, these bring back the last good ones.
RECOVERY = "the previous outputs come back with: git checkout params.yaml && dvc checkout"


def report(exc: BaseException, stopped: str = "") -> int:
    """Print the one line for a foreseeable failure; return its exit status. `stopped` says what a
    stopped command leaves (training commands: where the finished epochs are). Inside a DVC stage
    the line also says how to get the previous outputs back."""
    under_dvc = bool(os.environ.get("DVC_STAGE"))
    if isinstance(exc, KeyboardInterrupt):
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        message, status = (
            "; ".join(filter(None, [what, stopped])),
            (EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED),
        )
    else:
        message = str(exc)
        status = EXIT_DIVERGED if isinstance(exc, TrainingError) else EXIT_USER_ERROR
    print(error_line(f"{message}; {RECOVERY}" if under_dvc else message), file=sys.stderr)
    return status


def error_line(message: str) -> str:
    """`error: message` on one line whatever it holds (a file name may contain a line break)."""
    return "error: " + message.replace("\r", "\\r").replace("\n", "\\n")


def quiet_mlflow() -> None:
    """No progress bars or routine notices from MLflow's own calls; its warnings still show."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow sets its loggers' level from this when it is imported ("Creating initial MLflow database
    # tables", "Validating input example against model signature" are INFO).
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # A tracking server's run links in MLflow's own format (ours, with the training views, are logged).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # It logs every database error with its traceback before raising it; the error line says it.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def run(main: Callable[[], object], stopped: str = "") -> None:
    """Run an entry point's main(); foreseeable failures become one line and a distinct exit status.
    `stopped`: what the line for Ctrl-C or SIGTERM adds (report)."""
    # Last thing at exit, after every other exit handler: the interpreter's final garbage collections
    # then skip what exists by now (MLflow, SQLAlchemy and matplotlib leave millions of objects),
    # which took 0.5-1 s of every command's exit. Nothing is skipped that holds data: handlers have
    # flushed and closed files and runs before this.
    atexit.register(gc.freeze)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    quiet_mlflow()
    stop_on_sigterm()
    stop_with_dvc()
    try:
        main()
    except (UserError, KeyboardInterrupt) as exc:
        sys.exit(report(exc, stopped))
    except Exception as exc:  # a full disk, a read-only or damaged store: one line too; the rest is a bug
        known = known_failure(exc)
        if known is None:
            raise
        sys.exit(report(known))


def stage_args(doc: str, params: bool = True, **paths: str) -> argparse.Namespace:
    """Arguments of a DVC stage entry point: --params (unless `params` is false) and one --<name>
    option per path (with its default)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if params:
        parser.add_argument("--params", default="params.yaml", help="the parameters (default: params.yaml)")
    for name, default in paths.items():
        parser.add_argument(f"--{name}", default=default, help=f"(default: {default})")
    return parser.parse_args()
