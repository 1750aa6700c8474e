"""Errors a user can fix. Entry points print them as one line and exit non-zero, without a traceback."""

from __future__ import annotations

import errno
import os
import shlex


class UserError(Exception):
    """Bad input: the message names the problem and the fix."""


class ConfigError(UserError):
    """A parameter is missing, of the wrong type, unknown or out of range."""


class DataError(UserError):
    """An input file is missing, corrupt or not what the stage expects."""


class DownloadError(UserError):
    """No source delivered a file with the published checksum."""


class TrainingError(UserError):
    """Training produced something unusable, such as non-finite weights."""


# What SQLite says (through SQLAlchemy and MLflow) about a store it cannot write, and the fix.
_STORE_PROBLEMS = {
    "database or disk is full": "is full (no space left on its disk); free some space there and run again",
    "attempt to write a readonly database": (
        "is read-only for this user; ask its owner for write access, or set MLFLOW_TRACKING_URI to a store of your own"
    ),
    "database disk image is malformed": (
        "is damaged; see what is wrong with sqlite3 {file} 'PRAGMA integrity_check', then restore it from a backup"
    ),
}


def known_failure(exc: BaseException, writing: str = "") -> UserError | None:
    """A failure of the machine rather than of the code, as a UserError naming the file and the fix:
    a full disk or quota, a read-only file system, an SQLite store that is full, read-only or
    damaged. None for anything else (a bug, whose traceback is wanted). `writing` says what was
    being written where the error does not name a file (a copy fails mid-way without one)."""
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        where = f" writing {exc.filename or writing}" if exc.filename or writing else ""
        if exc.errno == errno.EROFS:
            return UserError(f"the file system is read-only{where}; run where you can write")
        return UserError(f"no space left on the device{where}; free some space there and run again")
    text = str(exc)
    for said, problem in _STORE_PROBLEMS.items():
        if said in text:
            uri = os.environ.get("MLFLOW_TRACKING_URI", "mlflow.db")  # MLflow exports the URI in use
            file = uri.removeprefix("sqlite:///")
            return UserError(f"the MLflow store {file} {problem.format(file=shlex.quote(file))}")
    return None
