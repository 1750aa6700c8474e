"""Hydra multiruns (basic and joblib launchers, Optuna sweeper) logged as MLflow parent + children,
and the comparison command on their runs. Real Hydra, real MLflow, tiny generated data."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from helpers import REPO, SOURCE, Watched, held_still, in_process, migrated_store, run, sweep, sweep_cmd, wait_for
from mnist_np.data import splits

COMPARE = str(REPO / "pipelines" / "compare.py")
pytestmark = pytest.mark.slow  # each sweep starts Hydra, MLflow and several processes


@pytest.fixture
def workdir(tiny_mnist, tmp_path):
    """A directory with data/processed/ from tiny IDX files and its own SQLite store."""
    raw_dir, cfg = tiny_mnist
    splits.save(tmp_path / "work" / "data" / "processed", *splits.prepare(raw_dir, cfg.data, SOURCE))
    env = {**os.environ, "MLFLOW_TRACKING_URI": migrated_store(tmp_path / "work" / "mlflow.db")}
    return tmp_path / "work", env


def runs_in(env: dict) -> pd.DataFrame:
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    return mlflow.search_runs(experiment_names=["mnist"])


def parent_and_children(env: dict) -> tuple[pd.Series, pd.DataFrame]:
    runs = runs_in(env)
    parents = runs[runs["tags.sweep"] == "parent"]
    assert len(parents) == 1, runs[["run_id", "tags.sweep"]]
    parent = parents.iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]]
    return parent, children


def refused_sweep(work: Path, env: dict, *overrides: str) -> subprocess.CompletedProcess:
    """helpers.sweep's command run in this process (helpers.in_process), for sweeps refused before
    their first job: the one-line errors, not a process boundary, are under test here (Hydra's own
    errors, test_hydras_own_errors_are_one_line_too, are checked through real processes)."""
    command = sweep_cmd(work, "train.epochs=1", *overrides)
    return in_process(command[1], command[2:], work, env)


def psutil_clock_offset() -> float:
    """How far the process start times psutil reports (the `process.started` tag) lie ahead of the
    wall clock here: psutil counts from the boot time, which the wall clock drifts away from."""
    before = time.time()
    with subprocess.Popen(["sleep", "1"]) as child:
        offset = psutil.Process(child.pid).create_time() - before
        child.kill()
    return offset


def check_grid_sweep(env: dict, numerics: str = "portable") -> None:
    parent, children = parent_and_children(env)
    assert parent["status"] == "FINISHED" and len(children) == 4
    assert set(children["status"]) == {"FINISHED"}
    assert set(children["tags.numerics.mode"]) == {numerics}  # the launcher's workers computed so
    grid = set(zip(children["params.train.lr"], children["params.model.hidden_size"]))
    assert grid == {("0.05", "8"), ("0.05", "12"), ("0.2", "8"), ("0.2", "12")}
    for metric in ("epoch/val_accuracy", "kept_val_accuracy", "test_accuracy", "test_loss", "epoch/train_loss"):
        assert children[f"metrics.{metric}"].notna().all(), metric
    top = children["metrics.kept_val_accuracy"].max()
    best = children.set_index("run_id").loc[parent["tags.best_run_id"]]  # one of the children...
    assert best["metrics.kept_val_accuracy"] == top == parent["metrics.kept_val_accuracy"]  # ...with the top score
    # The parent lines up with its children: the best child's params and metrics under the same keys.
    for key in ("params.train.lr", "params.model.hidden_size", "metrics.test_accuracy", "metrics.test_loss"):
        assert parent[key] == best[key], key
    assert (
        parent["tags.best_run_name"]
        == best["tags.mlflow.runName"]
        == f"h{best['params.model.hidden_size']}-lr{best['params.train.lr']}-b32-e1"
    )
    # The parent is named with the answer: what was swept, the best accuracy and which run had it.
    assert parent["tags.mlflow.runName"] == f"grid hidden_size x lr: {top:.1%} {best['tags.mlflow.runName']}"
    note = parent["tags.mlflow.note.content"]
    assert "train.lr=0.05,0.2" in note and f"runs/{parent['tags.best_run_id']}" in note and note.count("\n| [h") == 4
    assert all(c.startswith("784-") and "SGD lr" in c for c in children["tags.mlflow.note.content"])
    assert "params.data.mirrors" not in children and "params.data.files.train_images.sha256" not in children
    assert "train.lr=0.05,0.2" in parent["params.sweep.overrides"]
    assert parent["params.sweep.sweeper"] == "hydra_plugins.mnist_np_plugins.GridSweeper"  # the default
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    for run_id in children["run_id"]:
        artifacts = {a.path for a in client.list_artifacts(run_id, "weights")}
        assert artifacts == {"weights/model.npz"}
        steps = [m.step for m in client.get_metric_history(run_id, "epoch/val_accuracy")]
        assert steps == [1]
    assert {a.path for a in client.list_artifacts(parent["run_id"], "plots")} == {"plots/accuracy_vs_params.png"}


def test_basic_launcher_grid_gives_one_parent_and_four_children_composed_as_checked(workdir):
    # Native numerics: the sweep process, started portable, runs itself again natively before any run.
    # After the first job, `make params train.seed=22` in the sweep's conf/: no later job may see it.
    work, env = workdir
    conf = shutil.copytree(REPO / "conf", work / "conf")
    editor = "+hydra.callbacks.edit"
    cmd = sweep_cmd(
        work,
        "train.epochs=1",
        f"{editor}._target_=conf_editor.MakeParamsAfterFirstJob",
        f"{editor}.conf={conf}",
        f"{editor}.override='train.seed=22'",
        "train.lr=0.05,0.2",
        "model.hidden_size=8,12",
        "train.numerics=native",
    )
    run([*cmd[:2], f"--config-path={conf}", *cmd[2:]], work, {**env, "PYTHONPATH": str(REPO / "tests")})
    check_grid_sweep(env, "native")
    assert "seed: 22" in (conf / "selection.yaml").read_text()  # the edit happened, during the sweep
    assert set(parent_and_children(env)[1]["params.train.seed"]) == {"0"}
    # Job outputs stay in Hydra's sweep directory.
    assert len(list((work / "multirun").glob("*/model.npz"))) == 4


def test_optuna_sweep_is_seeded_and_maximises_validation_accuracy(workdir):
    work, env = workdir
    small_batches = "train.batch_size=choice(16,32,64)"  # the tiny data has 100 training images
    sweep(work, env, "hydra/sweeper=mnist_optuna", "hydra.sweeper.n_trials=3", small_batches)
    parent, children = parent_and_children(env)
    assert len(children) == 3 and parent["status"] == "FINISHED"
    assert parent["params.sweep.sweeper"].endswith("OptunaSweeper")
    result = yaml.safe_load((work / "multirun" / "optimization_results.yaml").read_text())
    assert result["best_value"] == children["metrics.kept_val_accuracy"].max()  # Optuna maximised what jobs returned
    assert set(result["best_params"]) == {"train.lr", "train.batch_size", "model.hidden_size"}
    # The study persists beside the SQLite MLflow store, named on the parent, with Optuna's figures there.
    store_path = env["MLFLOW_TRACKING_URI"][len("sqlite:///") :]
    study = optuna.load_study(
        study_name=parent["tags.optuna.study_name"], storage=f"sqlite:///{Path(store_path).parent / 'optuna.db'}"
    )
    assert study.study_name == result["study_name"] and len(study.trials) == 3
    assert study.best_value == result["best_value"]
    figures = {a.path for a in MlflowClient(env["MLFLOW_TRACKING_URI"]).list_artifacts(parent["run_id"], "optuna")}
    assert figures == {f"optuna/{n}.png" for n in ("optimization_history", "param_importances", "parallel_coordinate")}
    description = parent["tags.mlflow.note.content"]
    assert "train.lr: tag(log, interval(0.005, 1.0))" in description and study.study_name in description
    in_order = children.sort_values("start_time")  # the basic launcher runs the trials one by one
    first = list(zip(in_order["params.train.lr"], in_order["params.model.hidden_size"]))
    # The same seed proposes the same trials again (the first is enough to tell: its learning rate is
    # drawn from a continuous range).
    sweep(
        work,
        env,
        "hydra/sweeper=mnist_optuna",
        "hydra.sweeper.n_trials=1",
        small_batches,
        f"hydra.sweep.dir={work / 'again'}",
    )
    runs = runs_in(env)
    latest = runs[runs["tags.sweep"] == "parent"].sort_values("start_time").iloc[-1]
    again = runs[runs["tags.mlflow.parentRunId"] == latest["run_id"]].sort_values("start_time")
    assert list(zip(again["params.train.lr"], again["params.model.hidden_size"])) == first[:1]


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["train.lr=0.1,-5"], "train.lr=-5.0 is invalid"),
        (
            ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.hidden_size=8,0"],
            "model.hidden_size=0 is invalid",
        ),
        (["train.batch_size=16,500"], "train.batch_size=500 is larger than the 100 training images"),
        (["train.lr=0.1,0.2", "nonexistent.key=1,2"], "Could not override 'nonexistent.key'"),
        (["model=mlp,nonexistent"], "Could not find 'model/nonexistent'"),
        (["train.numerics=portable,native"], "train.numerics cannot change within a sweep"),
        (["hydra.launcher._target_=hydra_plugins.nope.Launcher", "train.lr=0.1,0.2"], "is not installed"),
        (
            [
                "hydra/sweeper=mnist_optuna",
                "hydra.sweeper.n_trials=2",
                "train.lr=interval(-1,0.5)",
            ],
            "train.lr=-1.0 is invalid",
        ),
    ],
)
def test_every_combination_is_checked_before_the_first_job(workdir, overrides, named):
    work, env = workdir
    done = refused_sweep(work, env, *overrides)
    assert done.returncode == 2 and named in done.stderr, done.stderr
    assert done.stderr.count("error:") == 1 and "Traceback" not in done.stderr
    assert runs_in(env).empty  # no parent, no child: nothing started
    assert not list((work / "multirun").glob("*/model.npz"))


@pytest.mark.parametrize(
    "arguments, named",
    [
        (["model=nope"], "error: In 'config': Could not find 'model/nope'; there are: mlp;"),
        (
            ["-m", "hydra/launcher=nope", "train.lr=0.1,0.2"],
            "error: In 'hydra/config': Could not find 'hydra/launcher/nope'; there are: basic,",
        ),
        (["-m", "train.lr=0.1,,"], "error: cannot read the override 'train.lr=0.1,,'"),
        (["-m", "train.lr=0.1,0.2", "--cfg", "job"], "error: Only one of --run, --multirun, --cfg, --info"),
    ],
)
def test_hydras_own_errors_are_one_line_too(workdir, arguments, named):
    """What Hydra rejects before any of our code runs (a single job's overrides, the launcher, the
    override grammar, flags that exclude each other) reads like every other error: one line, exit 2, no run opened."""
    work, env = workdir
    done = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "sweep.py"), *arguments],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and done.stderr.startswith(named) and done.stderr.count("\n") == 1, done.stderr
    assert runs_in(env).empty


def test_data_settings_other_than_the_prepared_data_are_refused(workdir):
    work, env = workdir
    done = refused_sweep(work, env, "data.standardize=true")
    assert done.returncode == 2 and "data.standardize=True (prepared: False)" in done.stderr
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_missing_data_stops_the_sweep_before_any_run(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    done = refused_sweep(tmp_path, env, "train.lr=0.1")
    assert done.returncode == 2 and "dvc repro normalize" in done.stderr
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_a_joblib_grid_with_more_jobs_than_workers_loses_nothing_and_compare_ranks_it(workdir):
    """Four jobs on two joblib workers, all there; compare.py prints them best first and writes the
    table and the figures (the first call as a process, as a person runs it; the others in-process)."""
    work, env = workdir
    sweep(work, env, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "train.lr=0.05,0.2", "model.hidden_size=8,12")
    check_grid_sweep(env)
    # The jobs ran in two workers that the sweep started before it opened its parent run
    # (launching.start_workers): their imports overlapped its start.
    parent, children = parent_and_children(env)
    workers = set(zip(children["tags.process.pid"], children["tags.process.started"].astype(float)))
    started = max(when for _, when in workers) - psutil_clock_offset()
    assert len(workers) == 2 and started < parent["start_time"].timestamp(), (workers, parent["start_time"])
    cmd = [
        sys.executable,
        COMPARE,
        "--experiment",
        "mnist",
        "--sweep",
        "latest",
        "--top",
        "3",
        "--csv",
        "runs.csv",
        "--markdown",
        "runs.md",
        "--plots",
        "figs",
    ]
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(work / "runs.csv")
    assert len(table) == 3 and table["kept_val_accuracy"].is_monotonic_decreasing
    assert {"train.lr", "model.hidden_size", "train.batch_size", "test_accuracy"} <= set(table.columns)
    # Printed as a person reads it: by name, best first, only what varies among the rows shown.
    title, header, first_row, *_ = done.stdout.splitlines()
    assert title.endswith("(the best 3 of 4 runs), by kept_val_accuracy:")
    assert first_row.split()[:2] == [table["run_name"].iloc[0], "FINISHED"]
    assert "run_id" not in header and "train.batch_size" not in header and "kept_val_accuracy" in header
    assert (work / "runs.md").read_text().startswith("| run_id")
    figures = {p.name for p in (work / "figs").rglob("*.png")}
    assert figures == {
        "learning_curves.png",
        "accuracy_vs_params.png",
        "accuracy_heatmap.png",
        "accuracy_vs_time.png",
        "confusion_matrix.png",
        "misclassified.png",
    }
    parent = runs_in(env).query("`tags.sweep` == 'parent'").iloc[0]
    assert f"the runs of sweep {parent['tags.mlflow.runName']!r} ({parent['run_id']})" in title

    by_loss = in_process(
        COMPARE,
        ["--experiment", "mnist", "--sort", "test_loss", "--csv", "loss.csv", "--no-plots", "--numerics"],
        work,
        env,
    )
    assert by_loss.returncode == 0, by_loss.stderr
    assert pd.read_csv(work / "loss.csv")["test_loss"].is_monotonic_increasing
    # What computed each run (every job of this sweep: the portable numerics, Haswell kernels, one thread).
    computed = pd.read_csv(work / "loss.csv")
    assert set(computed["numerics.mode"]) == {"portable"} and computed["numerics.cpu"].notna().all()
    assert computed["numerics.blas.scipy"].str.contains("Haswell kernels, 1 thread").all()
    bad = in_process(COMPARE, ["--experiment", "mnist", "--sort", "nonsense", "--no-plots"], work, env)
    assert bad.returncode == 2 and "cannot sort by 'nonsense'" in bad.stderr


def test_an_optuna_study_refills_free_slots_prunes_and_resumes_after_sigterm(workdir):
    """Two joblib slots, the study's trials queued in a known order: trial 0 learns for 100 epochs in
    one slot while the other takes trial 1 (3 epochs), trial 2 (lr 1e-5: it crawls, and the median
    pruner stops it after one epoch since trial 1 finished) and trial 3 (3 epochs), each as the one
    before it ends. The sweep is stopped then, and started again with the study's name."""
    work, env = workdir
    name, storage = "resumable", f"sqlite:///{work / 'optuna.db'}"  # beside the workdir's store
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    for lr, epochs in ((0.3, 100), (0.3, 3), (1e-5, 300), (0.3, 3)):
        study.enqueue_trial({"train.lr": lr, "train.epochs": epochs})
    cmd = sweep_cmd(
        work,
        "hydra/sweeper=mnist_optuna",
        f"hydra.sweeper.study_name={name}",
        "hydra.sweeper.n_trials=4",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",  # the sweeper's n_jobs follows: two trials at a time
        "hydra.sweeper.pruner=median",
        "+hydra.sweeper.pruner_args.n_startup_trials=1",
        "train.lr=choice(0.3,0.00001)",
        "train.epochs=choice(3,100,300)",
        "train.batch_size=16",
        "model.hidden_size=8",
    )
    first = Watched(cmd, work, env)

    def trial_0_pid() -> int | None:
        runs = runs_in(env)
        if "tags.process.pid" not in runs or "tags.sweep.job" not in runs:
            return None
        pids = runs[runs["tags.sweep.job"] == "0"]["tags.process.pid"].dropna()
        return int(pids.iloc[0]) if len(pids) else None

    # Trial 0 held still (as a slow job on a busy machine) until the other slot has taken trials 1-3:
    # how fast 100 epochs go on the machine at hand then changes nothing.
    with held_still(wait_for(trial_0_pid, what="trial 0's run")):
        first.wait_for_line("pruned at epoch 1")  # trial 2, in the slot trial 1 freed

        def states() -> list[str]:
            return [t.state.name for t in optuna.load_study(study_name=name, storage=storage).trials]

        wait_for(lambda: states()[3:] == ["COMPLETE"], what=f"trial 3 done: {first.err}", timeout=120)
        assert states() == ["RUNNING", "COMPLETE", "PRUNED", "COMPLETE"]  # three trials through one slot meanwhile
    assert first.stop(signal.SIGTERM)[0] == 143
    interrupted = [t for t in optuna.load_study(study_name=name, storage=storage).trials if t.state.name == "FAIL"]
    assert [t.number for t in interrupted] == [0] and interrupted[0].params == {"train.lr": 0.3, "train.epochs": 100}

    run(cmd, work, env)  # the same study, started again: trial 0's parameters again, and it is done
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert [(t.state.name, t.params["train.lr"], t.params["train.epochs"]) for t in trials] == [
        ("FAIL", 0.3, 100),  # stopped by the SIGTERM
        ("COMPLETE", 0.3, 3),
        ("PRUNED", 1e-5, 300),
        ("COMPLETE", 0.3, 3),
        ("COMPLETE", 0.3, 100),  # trial 0's parameters, queued again when it was stopped
    ]
    assert trials[4].system_attrs["failed_trial"] == 0 and trials[2].last_step == 1
    runs = runs_in(env)
    children = runs[runs["tags.sweep"] != "parent"]
    assert sorted(children["status"]) == ["FINISHED"] * 3 + ["KILLED"] * 2  # trial 2 pruned, trial 0 stopped
    (pruned,) = [row for _, row in children.iterrows() if row["tags.pruned_at_epoch"] == "1"]
    assert pruned["params.train.lr"] == "1e-05" and pruned["status"] == "KILLED"
    history = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_metric_history(pruned["run_id"], "epoch/val_accuracy")
    assert [m.step for m in history] == [1]  # its epoch kept
    parents = runs[runs["tags.sweep"] == "parent"].sort_values("start_time")
    assert list(parents["status"]) == ["KILLED", "FINISHED"]
    stopped = parents.iloc[0]
    assert stopped["tags.sweep.pruned_jobs"] == "1"
    assert stopped["tags.sweep.pruned_epochs_saved"] == "74%"  # 299 of the 406 planned epochs
    # One slot took trials 1, 2 and 3 while trial 0 ran in the other: each started as the one before it ended.
    jobs = children[children["tags.mlflow.parentRunId"] == stopped["run_id"]].set_index("tags.sweep.job")
    start, end = jobs["start_time"], jobs["end_time"]
    assert end["1"] <= start["2"] and end["2"] <= start["3"] and end["3"] < end["0"]
    table = in_process(COMPARE, ["--experiment", "mnist", "--no-plots"], work, env).stdout
    assert table.count("PRUNED") == 1, table
