"""What a failure's one line says: the machine's failures named with their file and fix, a stop
that says what it leaves (only commands that train have epochs to keep), and a DVC stage's line
saying how to get the previous outputs back."""

from __future__ import annotations

import errno

import pytest

from mnist_np import cli
from mnist_np.errors import ConfigError, TrainingError, known_failure


@pytest.mark.parametrize(
    "exc, said",
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/data/models/model.npz"),
            "no space left on the device writing /data/models/model.npz",
        ),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "no space left on the device; free some space"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/x"), "the file system is read-only writing /ro/x"),
        (RuntimeError("(sqlite3.OperationalError) database or disk is full"), "the MLflow store /s/mlflow.db is full"),
        (
            RuntimeError("attempt to write a readonly database"),
            "the MLflow store /s/mlflow.db is read-only for this user",
        ),
        (RuntimeError("database disk image is malformed"), "sqlite3 /s/mlflow.db 'PRAGMA integrity_check'"),
    ],
)
def test_failures_of_the_machine_name_the_file_and_the_fix(monkeypatch, exc, said):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////s/mlflow.db")
    assert said in str(known_failure(exc))


def test_other_failures_are_bugs_and_keep_their_traceback():
    assert known_failure(OSError(errno.ENOENT, "No such file")) is None and known_failure(KeyError("x")) is None


def test_a_stop_says_what_the_command_leaves(monkeypatch, capsys):
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert cli.report(cli.Terminated()) == 143 and capsys.readouterr().err == "error: terminated (SIGTERM)\n"
    assert cli.report(KeyboardInterrupt(), cli.TRAINING_STOPPED) == 130
    assert capsys.readouterr().err == f"error: interrupted; {cli.TRAINING_STOPPED}\n"
    assert cli.report(TrainingError("diverged")) == 3 and capsys.readouterr().err == "error: diverged\n"


def test_a_dvc_stage_says_how_to_get_the_previous_outputs_back(monkeypatch, capsys):
    monkeypatch.setenv("DVC_STAGE", "train")
    assert cli.report(ConfigError("train.lr=-1 is invalid")) == 2
    assert capsys.readouterr().err == f"error: train.lr=-1 is invalid; {cli.RECOVERY}\n"
    assert cli.RECOVERY.endswith("git checkout params.yaml && dvc checkout")
