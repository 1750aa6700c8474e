"""Faults and bad input through the real entry points: one `error:` line, a distinct exit status,
no traceback, no MLflow run left RUNNING, no finished epoch lost, no half-written file.

Signals are real signals sent to real processes; the stores are real SQLite files or a real
(unreachable) address; the data is tiny generated MNIST written by the normalize code."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from helpers import (
    AS_ANOTHER_USER,
    BIN,
    REPO,
    SOURCE,
    SWEEP,
    Watched,
    another_user_can_be_simulated,
    clean_env,
    in_process,
    migrated_store,
    run,
    sweep_cmd,
    tmpfs,
    wait_for,
)
from mnist_np import processes
from mnist_np.data import splits
from mnist_np.errors import UserError
from mnist_np.experiments import sweep_parent
from mnist_np.files import save_npz
from mnist_np.model import reference, weights

pytestmark = pytest.mark.slow  # every test trains or imports MLflow
TRAIN, EVALUATE = str(REPO / "pipelines" / "train.py"), str(REPO / "pipelines" / "evaluate.py")
COMPARE, PREDICT = str(REPO / "pipelines" / "compare.py"), str(REPO / "pipelines" / "predict.py")


@pytest.fixture
def project(tmp_path, tiny_mnist):
    """A directory with tiny processed data, a params.yaml, and its own SQLite store."""
    raw_dir, cfg = tiny_mnist
    splits.save(tmp_path / "data" / "processed", *splits.prepare(raw_dir, cfg.data, SOURCE))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_of(cfg)))
    env = clean_env(MLFLOW_TRACKING_URI=migrated_store(tmp_path / "mlflow.db"), PYTHONUNBUFFERED="1")
    return tmp_path, env


def params_of(cfg) -> dict:
    from dataclasses import asdict

    return asdict(cfg)


def set_params(work: Path, **values) -> None:
    """Change params.yaml: set_params(work, **{"train.lr": 1000, "train.augment.enabled": True})."""
    params = yaml.safe_load((work / "params.yaml").read_text())
    for dotted, value in values.items():
        *sections, key = dotted.split(".")
        section = params
        for name in sections:
            section = section[name]
        section[key] = value
    (work / "params.yaml").write_text(yaml.safe_dump(params))


def stage_cmd(script: str) -> list[str]:
    return [
        sys.executable,
        script,
        "--params",
        "params.yaml",
        "--data",
        "data/processed",
        "--models",
        "models",
        "--reports",
        "reports",
    ]


def stage(script: str, work: Path, env: dict) -> subprocess.CompletedProcess:
    """The stage run to its end, in this process (signals go to Watched processes of their own)."""
    return in_process(script, stage_cmd(script)[2:], work, env)


def all_runs(env: dict) -> pd.DataFrame:
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    return mlflow.search_runs(search_all_experiments=True)


def one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def steps(env: dict, run_id: str, key: str = "epoch/val_accuracy") -> list[int]:
    return sorted(m.step for m in MlflowClient(env["MLFLOW_TRACKING_URI"]).get_metric_history(run_id, key))


# --- stopping a run ------------------------------------------------------------------------------


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_train_stage_keeps_its_epochs_and_ends_killed(project, sig, status):
    work, env = project
    set_params(work, **{"train.epochs": 100000})
    train = Watched(stage_cmd(TRAIN), work, env)
    train.wait_for_line("epoch 3/100000")
    returncode, stderr = train.stop(sig)
    assert returncode == status and "KILLED" in one_error_line(stderr)
    (run_id,) = all_runs(env)["run_id"]
    assert MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(run_id).info.status == "KILLED"
    logged = steps(env, run_id)
    assert logged == list(range(1, len(logged) + 1)) and len(logged) >= 3  # every finished epoch, in order
    assert not (work / "models").exists() or not any((work / "models").iterdir())  # no weights, no temp files


def test_ctrl_c_during_augmented_training_stops_the_distorting_process_too(project):
    """Ctrl-C reaches the whole foreground process group: the trainer and the process that distorts
    its images. One error line (none from the worker), the epochs kept, nothing left running."""
    work, env = project
    set_params(work, **{"train.epochs": 100000, "train.augment.enabled": True})
    train = Watched(stage_cmd(TRAIN), work, env, group=True)
    train.wait_for_line("epoch 3/100000")
    returncode, stderr = train.stop(signal.SIGINT)
    assert returncode == 130 and "KILLED" in one_error_line(stderr)
    (run_id,) = all_runs(env)["run_id"]
    assert len(steps(env, run_id)) >= 3
    wait_for(lambda: not _group_alive(train.proc.pid), 30, "the distorting process to end")


def test_a_killed_distorting_process_fails_the_run_with_its_reason_and_keeps_the_epochs(project):
    """The process that distorts the images dies (the kernel's out-of-memory killer, say): the train
    stage stops with one line naming it and the fix, the run is FAILED, its finished epochs kept."""
    work, env = project
    set_params(work, **{"train.epochs": 100000, "train.augment.enabled": True})
    train = Watched(stage_cmd(TRAIN), work, env)
    train.wait_for_line("epoch 3/100000")
    (worker,) = [c for c in psutil.Process(train.proc.pid).children() if c.cmdline() == train.proc.args]  # forked
    worker.kill()
    returncode, stderr = train.wait(timeout=60)
    line = one_error_line(stderr)
    assert returncode == 3 and "distorting the training images stopped" in line, line
    assert "train.augment.enabled=false" in line
    (run,) = [row for _, row in all_runs(env).iterrows()]
    assert run["status"] == "FAILED" and len(steps(env, run["run_id"])) >= 3


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_sigterm_to_a_sweep_ends_it_keeping_the_finished_child_and_resumed_it_runs_only_what_is_left(project):
    """A grid of three jobs stopped by SIGTERM while its second job trains (the first finished, the
    third never started): parent and children end, none RUNNING, the finished child kept as the best.
    Started again with `hydra.sweeper.resume=<its parent>` as its last line says: the finished job is
    not run again, the stopped one continues its run, the third gets its first; one parent with three
    children, all FINISHED."""
    work, env = project
    cmd = sweep_cmd(work, "train.epochs=2,100,3")
    sweep = Watched(cmd, work, env)
    sweep.wait_for_line("epoch 3/100")  # the first job has finished, the second trains
    returncode, stderr = sweep.stop(signal.SIGTERM)
    assert returncode == 143 and "terminated" in one_error_line(stderr)
    runs = all_runs(env).set_index("run_id")
    parent = runs[runs["tags.sweep"] == "parent"].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == parent.name]
    assert parent["status"] == "KILLED" and "RUNNING" not in set(runs["status"])
    (long_job,) = children.index[children["status"] == "KILLED"]
    assert steps(env, long_job)[:3] == [1, 2, 3]
    finished = children[children["status"] == "FINISHED"]
    assert len(finished) == 1 and parent["tags.best_run_id"] == finished.index[0]  # the finished child is kept
    assert parent["metrics.kept_val_accuracy"] == finished["metrics.kept_val_accuracy"].iloc[0]
    (hint,) = [line for line in stderr.splitlines() if line.startswith("note: to run its unfinished jobs")]
    before, stopped = runs, parent.name
    assert hint.endswith(f"hydra.sweeper.resume={stopped}"), stderr
    first = before[before["tags.sweep.job"] == "0"].iloc[0]

    resumed = sweep_cmd(work, "train.epochs=2,100,3", f"hydra.sweeper.resume={stopped}")
    done = run(resumed, work, env, timeout=300)
    assert "job 0 finished in the sweep this one resumes: not run again" in done.stdout + done.stderr
    runs = all_runs(env).set_index("run_id")  # deleted runs (the earlier parent) are not listed
    (parent,) = runs.index[runs["tags.sweep"] == "parent"]
    children = runs[runs["tags.mlflow.parentRunId"] == parent].reset_index().set_index("tags.sweep.job")
    assert runs.loc[parent, "tags.sweep.resumed_from"] == stopped and runs.loc[parent, "status"] == "FINISHED"
    assert sorted(children.index) == ["0", "1", "2"] and set(children["status"]) == {"FINISHED"}
    assert runs.loc[parent, "tags.sweep.children"] == "3" and runs.loc[parent, "tags.sweep.failed_jobs"] == "0"
    assert children.loc["0", "run_id"] == first.name and children.loc["0", "end_time"] == first["end_time"]
    assert children.loc["1", "tags.sweep.attempt"] == "2"  # its run, continued
    assert steps(env, children.loc["1", "run_id"])[-1] == 100 and steps(env, children.loc["2", "run_id"]) == [1, 2, 3]
    assert MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(stopped).info.lifecycle_stage == "deleted"
    # A sweep with other overrides cannot resume it (its jobs' numbers would not match).
    client, experiment_id = MlflowClient(env["MLFLOW_TRACKING_URI"]), runs.loc[parent, "experiment_id"]
    sweep_parent.check_resumable(client, parent, experiment_id, "data.val_size=20 train.epochs=2,100,3")
    with pytest.raises(UserError, match="this one `train.epochs=2,4`; resume it with the same overrides"):
        sweep_parent.check_resumable(client, parent, experiment_id, "train.epochs=2,4")
    with pytest.raises(UserError, match=f"that sweep was resumed as {parent}; resume that one"):
        sweep_parent.check_resumable(client, stopped, experiment_id, "data.val_size=20 train.epochs=2,100,3")


def test_a_sigterm_to_a_joblib_sweep_leaves_nothing_running(project):
    work, env = project
    cmd = sweep_cmd(
        work, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "train.epochs=100000", "model.hidden_size=8,12"
    )
    sweep = Watched(cmd, work, env)
    sweep.wait_for_line("epoch 3/100000")
    returncode, stderr = sweep.stop(signal.SIGTERM)
    assert returncode == 143 and "terminated" in one_error_line(stderr)
    wait_for(lambda: "RUNNING" not in set(all_runs(env)["status"]), timeout=30, what="no RUNNING run")
    runs = all_runs(env)
    assert set(runs.loc[runs["tags.sweep"] == "parent", "status"]) == {"KILLED"}
    assert set(runs.loc[runs["tags.sweep"] != "parent", "status"]) == {"KILLED"}


def test_runs_of_processes_killed_outright_are_closed_by_the_next_command(project):
    """SIGKILL (the OOM killer, a reboot) runs no exit handler: the train stage's run and a sweep's
    parent and child stay RUNNING until the next command that opens the store finds their processes
    gone and closes them KILLED, with the reason, in one line. Live runs are left alone."""
    work, env = project
    set_params(work, **{"train.epochs": 100000})
    train = Watched(stage_cmd(TRAIN), work, env)
    swept = Watched(sweep_cmd(work, "train.epochs=100000"), work, env)
    for process in (train, swept):
        process.wait_for_line("epoch 2/100000")
    compare = [COMPARE, "--no-plots"]
    done = in_process(COMPARE, compare[1:], work, env)
    assert done.returncode == 0 and "note: closed" not in done.stderr, done.stderr  # alive: left alone
    assert set(all_runs(env)["status"]) == {"RUNNING"}
    for process in (train, swept):
        process.stop(signal.SIGKILL)
    done = in_process(COMPARE, compare[1:], work, env)
    notes = [line for line in done.stderr.splitlines() if line.startswith("note: closed 3 run(s)")]
    assert done.returncode == 0 and len(notes) == 1, done.stderr
    runs = all_runs(env)
    assert set(runs["status"]) == {"KILLED"} and len(runs) == 3
    assert all(f"pid {pid} " in " ".join(runs["tags.failure"]) for pid in (train.proc.pid, swept.proc.pid))
    assert runs["tags.failure"].str.contains("ended without closing it; closed as KILLED when noticed at").all()
    assert (runs["end_time"] >= runs["start_time"]).all()  # ended at the last heartbeat


# --- bad values ----------------------------------------------------------------------------------


def test_a_batch_larger_than_the_training_split_is_refused_before_any_run(project):
    work, env = project
    set_params(work, **{"train.batch_size": 500})
    done = stage(TRAIN, work, env)
    assert done.returncode == 2
    assert "train.batch_size=500 is larger than the 100 training images" in one_error_line(done.stderr)
    assert all_runs(env).empty


@pytest.mark.parametrize("hidden", [2_500_000, 50_000_000])  # ~74 GiB and ~1.4 TiB to train
def test_a_network_too_large_for_memory_is_refused_before_anything_is_allocated(project, hidden):
    work, env = project
    set_params(work, **{"model.hidden_size": hidden})
    before = psutil.Process().memory_info().rss
    done = stage(TRAIN, work, env)  # in this process: what it allocated would show in its memory
    line = one_error_line(done.stderr)
    assert done.returncode == 2 and f"model.hidden_size={hidden} needs about " in line, line
    assert "GiB this machine has available; choose a smaller model.hidden_size" in line
    assert psutil.Process().memory_info().rss - before < 2**30 and all_runs(env).empty


def test_divergence_fails_the_run_with_its_reason(project):
    work, env = project
    set_params(work, **{"train.lr": 1000.0})
    done = stage(TRAIN, work, env)
    assert done.returncode == 3 and "diverged in epoch 1" in one_error_line(done.stderr)
    (run,) = [row for _, row in all_runs(env).iterrows()]
    assert run["status"] == "FAILED" and "diverged" in run["tags.failure"]
    assert not (work / "models" / "model.npz").exists()


def test_a_diverging_job_fails_alone_and_the_sweep_goes_on(project):
    work, env = project
    cmd = sweep_cmd(work, "train.epochs=2", "train.lr=0.1,1000")
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3 and "Traceback" not in done.stderr
    runs = all_runs(env)
    children = runs[runs["tags.sweep"] != "parent"].set_index("params.train.lr")
    failed = children.loc["1000.0", "tags.mlflow.runName"]
    assert f"error: 1 job(s) of the sweep failed (job 1 ({failed})); their runs" in done.stderr  # named
    assert children.loc["0.1", "status"] == "FINISHED" and children.loc["1000.0", "status"] == "FAILED"
    assert "diverged" in children.loc["1000.0", "tags.failure"]
    parent = runs[runs["tags.sweep"] == "parent"].iloc[0]
    assert parent["status"] == "FAILED" and parent["tags.best_run_id"] == children.loc["0.1", "run_id"]
    table = subprocess.run(
        [
            sys.executable,
            str(REPO / "pipelines" / "compare.py"),
            "--experiment",
            "mnist",
            "--no-plots",
            "--sweep",
            "latest",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert table.returncode == 0 and "FAILED" in table.stdout and "diverged" in table.stdout


# --- broken state on disk ------------------------------------------------------------------------


def corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "not-npz":
        path.write_text("x,y\n1,2\n")
    elif how == "object":
        np.savez(path, x=np.array([object()], dtype=object), y=np.zeros(1))
    elif how == "wrong-dtype":
        save_npz(path, x=np.zeros((100, 784), np.uint8).astype(str), y=np.zeros(100, np.uint8))


@pytest.mark.parametrize("how", ["truncated", "not-npz", "object", "wrong-dtype"])
def test_broken_processed_data_is_one_line_naming_the_file_and_no_run(project, how):
    work, env = project
    corrupt(work / "data" / "processed" / "train.npz", how)
    done = stage(TRAIN, work, env)
    line = one_error_line(done.stderr)
    assert done.returncode == 2 and "train.npz" in line and "dvc repro --force normalize" in line
    assert all_runs(env).empty


@pytest.mark.parametrize(
    "arrays",
    [
        {"W1": np.zeros((100, 10), np.float32), "b1": np.zeros(10, np.float32)},
        {
            "W1": np.zeros((10, 784), np.float32),
            "b1": np.zeros(10, np.float32),
            "W2": np.zeros((10, 10), np.float32),
            "b2": np.zeros(10, np.float32),
        },
    ],
)
def test_weights_of_the_wrong_shape_stop_evaluate_before_any_run(project, arrays):
    work, env = project
    save_npz(work / "models" / "model.npz", **arrays)
    done = stage(EVALUATE, work, env)
    line = one_error_line(done.stderr)
    assert done.returncode == 2 and "model.npz" in line and "dvc repro --force train" in line
    assert all_runs(env).empty


def test_evaluate_twice_adds_no_duplicate_points_and_outputs_respect_the_umask(project):
    work, env = project
    previous = os.umask(0o022)
    try:
        assert stage(TRAIN, work, env).returncode == 0
        for _ in range(2):
            done = stage(EVALUATE, work, env)
            assert done.returncode == 0, done.stderr
    finally:
        os.umask(previous)
    (run_id,) = all_runs(env)["run_id"]
    assert steps(env, run_id, "test_accuracy") == [0]
    for path in (work / "models" / "model.npz", work / "reports" / "metrics.json", work / "reports" / "training.csv"):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_weights_no_run_in_the_store_wrote_name_the_fix(project):
    work, env = project
    weights.save(work / "models" / "model.npz", reference.init_params(10, np.random.default_rng(0)))
    done = stage(EVALUATE, work, env)
    assert done.returncode == 2 and "dvc repro --force train" in one_error_line(done.stderr)


# --- the tracking store --------------------------------------------------------------------------


def test_an_unreachable_tracking_server_fails_fast_before_training(project):
    work, env = project
    uri = f"http://127.0.0.1:{processes.free_port()}"
    start = time.monotonic()
    done = stage(TRAIN, work, {**env, "MLFLOW_TRACKING_URI": uri})
    assert time.monotonic() - start < 15
    assert done.returncode == 2 and uri in one_error_line(done.stderr)
    assert not (work / "models").exists()


def test_a_server_that_accepts_and_never_answers_stops_compare_and_predict_in_one_line(project):
    """Connections complete in the socket's backlog, and nothing ever reads them: MLflow would wait
    120 s a request and retry. The store check waits MLFLOW_HTTP_REQUEST_TIMEOUT (at most 10 s)."""
    work, env = project
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(work / "digit.png")
    with socket.create_server((processes.HOST, 0)) as silent:
        uri = f"http://{processes.HOST}:{silent.getsockname()[1]}"
        env = {**env, "MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
        start = time.monotonic()
        answers = [
            in_process(COMPARE, ["--no-plots"], work, env),
            in_process(PREDICT, ["--model", "runs:/0123456789abcdef/model", "digit.png"], work, env),
        ]
        assert time.monotonic() - start < 20
    for done in answers:
        line = one_error_line(done.stderr)
        assert done.returncode == 2 and f"the MLflow tracking server {uri} does not answer" in line, line


def test_a_damaged_store_is_one_line_naming_the_file_and_the_check(project):
    work, env = project
    store_file = Path(env["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    with open(store_file, "r+b") as db:  # a 4 KB page in the middle overwritten, as a failing disk does
        db.seek(12 * 4096)
        db.write(os.urandom(4096))
    for done in (stage(TRAIN, work, env), in_process(COMPARE, ["--no-plots"], work, env)):
        line = one_error_line(done.stderr)
        assert done.returncode == 2 and f"the MLflow store {store_file} is damaged" in line, line
        assert f"sqlite3 {store_file} 'PRAGMA integrity_check'" in line
    assert not (work / "models").exists()


def test_a_store_whose_writer_was_killed_mid_write_is_not_called_damaged(tmp_path):
    """A process killed outright while writing leaves SQLite's journal beside the store (a "hot"
    journal); the next command's check must roll it back as any writer does, not call the store
    damaged because a read-only look cannot (seen as a flaky failure of the killed-outright test)."""
    from mnist_np.tracking import store

    path = tmp_path / "mlflow.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE t(x)")
        db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(20000)])
        db.commit()
    writer = (  # a write spilled to the file (cache of one page), then SIGKILL before the commit
        f"import os, sqlite3; db = sqlite3.connect({str(path)!r}, isolation_level=None); "
        "db.execute('PRAGMA cache_size=1'); db.execute('BEGIN IMMEDIATE'); db.execute('UPDATE t SET x = x + 1'); "
        "os.kill(os.getpid(), 9)"
    )
    assert subprocess.run([sys.executable, "-c", writer]).returncode == -signal.SIGKILL
    assert path.with_name("mlflow.db-journal").is_file()
    store.check_store(f"sqlite:///{path}")  # no UserError
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT sum(x) FROM t").fetchone()[0] == sum(range(20000))  # the write undone


def test_an_sqlite_store_in_a_missing_folder_is_refused(project):
    work, env = project
    done = stage(TRAIN, work, {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'no' / 'such' / 'mlflow.db'}"})
    assert done.returncode == 2 and "does not exist" in one_error_line(done.stderr)
    assert not (work / "no").exists() and not (work / "mlruns").exists()


def test_artifacts_go_beside_a_user_given_sqlite_store(project):
    work, env = project
    (work / "elsewhere").mkdir()
    env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'elsewhere' / 'store.db'}"}
    assert stage(TRAIN, work, env).returncode == 0
    assert list((work / "elsewhere" / "mlartifacts").rglob("model.npz")) and not (work / "mlruns").exists()


def test_an_artifact_location_that_cannot_be_written_is_found_before_training(project):
    work, env = project
    (work / "a-file").write_text("not a folder")
    MlflowClient(env["MLFLOW_TRACKING_URI"]).create_experiment("mnist", (work / "a-file" / "artifacts").as_uri())
    done = stage(TRAIN, work, env)
    assert done.returncode == 2 and "cannot write MLflow artifacts" in one_error_line(done.stderr)
    assert all_runs(env).empty


# --- disks and permissions ----------------------------------------------------------------------


def test_a_disk_that_fills_with_the_artifacts_is_one_line_a_failure_tag_and_no_outputs(project):
    work, env = project
    with tmpfs(work / "mlartifacts", "size=16k"):  # MLflow's artifacts beside the store; the weights take 31 KB
        done = stage(TRAIN, work, env)
    line = one_error_line(done.stderr)
    assert done.returncode == 2 and "no space left on the device" in line and str(work / "mlartifacts") in line, line
    (failed,) = [run for _, run in all_runs(env).iterrows()]
    assert failed["status"] == "FAILED" and "no space left" in failed["tags.failure"]
    assert steps(env, failed["run_id"]) == [1, 2]  # its epochs kept
    assert not (work / "models" / "model.npz").exists() and not list((work / "reports").glob("training.*"))


def test_a_store_whose_disk_is_full_is_one_line_naming_it(project):
    work, env = project
    with tmpfs(work / "disk", "size=1m") as disk:
        uri = migrated_store(disk / "mlflow.db")
        with open(disk / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
            while True:  # until the disk is full
                filler.write(b"\0" * 4096)
        done = stage(TRAIN, work, {**env, "MLFLOW_TRACKING_URI": uri})
        line = one_error_line(done.stderr)
        assert done.returncode == 2, done.stderr
        assert f"the MLflow store {disk / 'mlflow.db'} is full (no space left on its disk)" in line, line
        (disk / "filler").unlink()
        assert "RUNNING" not in set(all_runs({"MLFLOW_TRACKING_URI": uri}).get("status", []))


def test_outputs_that_cannot_be_written_are_found_before_training(project):
    work, env = project
    with tmpfs(work / "models", "ro,size=4k"):  # a read-only checkout, as far as the stage's outputs go
        done = stage(TRAIN, work, env)
    line = one_error_line(done.stderr)
    assert done.returncode == 2 and f"cannot write the stage's outputs to {work / 'models'}" in line, line
    assert "Read-only file system" in line and all_runs(env).empty


def test_a_store_owned_by_another_user_is_refused_before_training(project):
    work, env = project
    reason = another_user_can_be_simulated()
    if reason:
        pytest.skip(reason)
    theirs = work / "theirs"
    uri = migrated_store(theirs / "mlflow.db")
    for path in (theirs, theirs / "mlflow.db"):
        os.chown(path, 65534, 65534)  # nobody's
    done = subprocess.run(
        [*AS_ANOTHER_USER, *stage_cmd(TRAIN)],
        cwd=work,
        env={**env, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
    )
    line = one_error_line(done.stderr)
    assert done.returncode == 2 and f"the MLflow store {theirs / 'mlflow.db'} cannot be written by this user" in line
    assert not (work / "models").exists()


def test_two_sweeps_started_together_keep_their_own_children(project):
    work, env = project
    cmd = [sys.executable, SWEEP, "-m", "data.val_size=20", "train.epochs=1", "model.hidden_size=8,12"]
    procs = [
        subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
    runs = all_runs(env)
    parents = runs[runs["tags.sweep"] == "parent"]
    assert len(parents) == 2 and len(set(parents["tags.sweep.dir"])) == 2
    for parent_id in parents["run_id"]:
        children = runs[runs["tags.mlflow.parentRunId"] == parent_id]
        assert sorted(children["params.model.hidden_size"]) == ["12", "8"]


# --- prediction input ----------------------------------------------------------------------------


def blank_png(width: int, height: int) -> bytes:
    """A white greyscale PNG written chunk by chunk, never held in memory as pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    packer, row = zlib.compressobj(9), b"\0" + b"\xff" * width
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_a_decompression_bomb_gets_its_own_error_and_memory_stays_bounded(tmp_path, mnist_mirror):
    from mnist_np.data.idx import read_idx

    digit = read_idx(mnist_mirror / "t10k-images-idx3-ubyte.gz")[0]
    Image.fromarray(255 - digit).resize((56, 56)).save(tmp_path / "digit.png")
    # A 30000 x 30000 PNG of 0.9 MB, and a 6000 x 4500 photo-sized page with the digit on it.
    (tmp_path / "bomb.png").write_bytes(blank_png(30000, 30000))
    page = Image.new("L", (6000, 4500), 235)
    page.paste(Image.fromarray(255 - digit).resize((600, 600)), (2500, 2000))
    page.save(tmp_path / "page.png")
    weights.save(tmp_path / "model.npz", reference.init_params(10, np.random.default_rng(0)))
    stats = {
        "scale": 255.0,
        "standardize": False,
        "preprocessing": "digits",
        "mean": 0.13,
        "std": 0.3,
        "sizes": {"train": 1},
        "processed_sha256": {},
    }
    (tmp_path / "stats").mkdir()
    (tmp_path / "stats" / "stats.json").write_text(json.dumps(stats))
    # VmHWM: the peak of this process's own memory (ru_maxrss would count what it shared with
    # pytest before exec).
    code = (
        "import sys; from pathlib import Path; from mnist_np.serving.predict import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
        "peak = next(l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM'))\n"
        "print('peak_mb', int(peak.split()[1]) / 1024, file=sys.stderr)\n"
        "sys.exit(code)"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "--json",
            "--model",
            str(tmp_path / "model.npz"),
            "--stats",
            str(tmp_path / "stats"),
            str(tmp_path / "bomb.png"),
            str(tmp_path / "digit.png"),
            str(tmp_path / "page.png"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    results = {Path(r["file"]).name: r for r in json.loads(done.stdout)}
    assert "30000 x 30000" in results["bomb.png"]["error"] or "exceeds limit" in results["bomb.png"]["error"]
    assert "digit" in results["digit.png"] and "digit" in results["page.png"]
    peak = float(done.stderr.rsplit("peak_mb", 1)[1].split()[0])
    assert peak < 500, peak


def test_a_file_name_with_a_line_break_keeps_its_error_on_one_line(project):
    work, env = project
    (work / "bad\nname.png").write_bytes(b"not an image")
    (work / "models").mkdir()
    weights.save(work / "models" / "model.npz", reference.init_params(10, np.random.default_rng(0)))
    done = in_process(PREDICT, ["bad\nname.png"], work, env)
    line = one_error_line(done.stderr)
    assert done.returncode == 1 and "bad\\nname.png: not a readable image" in line, line


def test_the_predict_command_answers_one_line_for_a_missing_model(tmp_path):
    Image.new("L", (28, 28), 0).save(tmp_path / "x.png")
    done = subprocess.run(
        [str(BIN / "mnist-predict"), "--model", str(tmp_path / "none.npz"), str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "none.npz not found" in one_error_line(done.stderr)
    done = subprocess.run(  # no --model, outside the repository: the cause, not "run the train stage"
        [str(BIN / "mnist-predict"), "x.png"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    line = one_error_line(done.stderr)
    assert done.returncode == 2 and f"no trained model at {tmp_path / 'models' / 'model.npz'}" in line, line
    assert "run mnist-predict in the repository after `make run`, or pass --model" in line
