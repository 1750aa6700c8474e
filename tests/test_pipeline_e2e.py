"""End to end: the real `dvc repro` and `dvc exp run` in a temporary copy of the repository,
against the real MNIST files, checking the reports and the runs in the real MLflow store.
Every test starts from the fixture's first `dvc repro`, whatever ran before it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from helpers import REPO, Watched, browser_page, clean_env, copy_checkout, run, wait_for, write_tiny_mnist
from mnist_np import processes
from mnist_np.files import sha256_file

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]  # conftest.py: why a group
EPOCHS = 2
JUDGE_COLUMNS = 8


@pytest.fixture(scope="module")
def project(tmp_path_factory, mnist_mirror):
    """A git repository holding what this checkout would commit, with training shrunk to EPOCHS and
    the judge to JUDGE_COLUMNS, after its first `dvc repro`: (directory, environment, that repro's
    output and error streams)."""
    dest = tmp_path_factory.mktemp("e2e") / "repo"
    copy_checkout(dest)
    for generated in ("dvc.lock", "reports"):  # start from nothing, as a fresh clone before its first run
        shutil.rmtree(dest / generated, ignore_errors=True) if (dest / generated).is_dir() else (
            dest / generated
        ).unlink(missing_ok=True)
    env = clean_env(
        MNIST_MIRROR=str(mnist_mirror),
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
    )
    sgd = dest / "conf" / "train" / "sgd.yaml"
    sgd.write_text(sgd.read_text().replace("epochs: 30", f"epochs: {EPOCHS}"))
    data = dest / "conf" / "data" / "mnist.yaml"  # and the judge of touching digits (normalize)
    data.write_text(data.read_text().replace("judge_columns: 24000", f"judge_columns: {JUDGE_COLUMNS}"))
    run([sys.executable, "pipelines/compose_params.py"], dest, env)
    run(["git", "init", "-q"], dest, env)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-qm", "copy"], dest, env)
    done = run(["dvc", "repro"], dest, env)
    yield dest, env, done.stdout + done.stderr
    # DVC's queue workers can outlive `dvc queue stop`: end whatever still runs in the project.
    for pid in processes_in(dest.parent):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def store(dest: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{dest / 'mlflow.db'}")


def runs(dest: Path) -> list:
    exp = store(dest).get_experiment_by_name("mnist")
    return store(dest).search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def test_repro_builds_everything_and_logs_one_mlflow_run(project):
    dest, env, out = project
    for stage in ("download", "normalize", "train", "evaluate"):
        assert f"Running stage '{stage}'" in out

    metrics = json.loads((dest / "reports" / "metrics.json").read_text())
    assert 0.85 < metrics["test_accuracy"] <= 1 and 0 < metrics["test_loss"] < 1
    classification = json.loads((dest / "reports" / "classification.json").read_text())
    assert sum(map(sum, classification["confusion_matrix"])) == 10_000
    assert set(classification["per_class"]) == {str(d) for d in range(10)}
    predictions = pd.read_csv(dest / "reports" / "predictions.csv")
    assert len(predictions) == 10_000 and (predictions.actual == predictions.predicted).mean() == pytest.approx(
        metrics["test_accuracy"]
    )
    history = pd.read_csv(dest / "reports" / "training.csv")
    assert history.epoch.tolist() == list(range(1, EPOCHS + 1))

    only = runs(dest)[0]  # the fixture's repro made the first run
    assert only.info.status == "FINISHED" and only.info.run_name == f"h10-lr0.1-b32-e{EPOCHS}"
    page = f"http://127.0.0.1:5000/#/experiments/{only.info.experiment_id}/runs/{only.info.run_id}"
    link = f"{page}/model-metrics?workflowType=machine_learning"  # the run's curves
    assert f"test accuracy {100 * metrics['test_accuracy']:.2f}%" in out and out.count(link) == 1
    # make run ends with it again, after DVC's hints, and with the run's report (also an artifact).
    shown = run([sys.executable, "pipelines/report.py", "--pipeline"], dest, env)
    last = (shown.stdout + shown.stderr).strip().splitlines()
    assert last[-2].endswith(f"the run in MLflow: {link}") and last[-3].endswith(
        "the run's report: reports/report.html"
    )
    report = (dest / "reports" / "report.html").read_text()
    assert f"Run {only.info.run_name}" in report and f"{metrics['test_accuracy']:.2%}" in report
    assert "report.html" in [a.path for a in store(dest).list_artifacts(only.info.run_id)]
    assert "Downloading artifacts" not in out and "Add type hints" not in out
    assert "Creating initial MLflow database tables" not in out and "Validating input example" not in out
    assert "%|" not in out  # no progress bars in output that is not a terminal (tqdm's disable=None)
    experiment = store(dest).get_experiment(only.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "params.data.mirrors" not in only.data.params and "data.val_size" in only.data.params
    datasets = {d.dataset.name: d for d in only.inputs.dataset_inputs}
    assert set(datasets) == {"mnist-train", "mnist-val", "mnist-test"}
    assert [tag.value for tag in datasets["mnist-test"].tags if tag.key == "mlflow.data.context"] == ["test"]
    assert datasets["mnist-train"].dataset.digest == json.loads(only.data.tags["data.sha256"])["train.npz"][:16]
    training = json.loads((dest / "reports" / "training.json").read_text())
    assert training == {
        "kept_epoch": EPOCHS,
        "kept_val_accuracy": only.data.metrics["kept_val_accuracy"],
        "epochs_run": EPOCHS,
    }
    assert only.data.params["model.hidden_size"] == "10" and only.data.params["train.epochs"] == str(EPOCHS)
    assert only.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    steps = [m.step for m in store(dest).get_metric_history(only.info.run_id, "epoch/val_accuracy")]
    assert steps == list(range(1, EPOCHS + 1))
    head = run(["git", "rev-parse", "HEAD"], dest, env).stdout.strip()
    assert only.data.tags[MLFLOW_GIT_COMMIT] == head and only.data.tags["git_dirty"] == "false"
    assert only.data.metrics["kept_epoch"] == EPOCHS and only.data.metrics["epochs_run"] == EPOCHS
    assert json.loads(only.data.tags["data.sha256"])["train-images-idx3-ubyte.gz"].startswith("440fcabf")
    weights = mlflow.artifacts.download_artifacts(
        run_id=only.info.run_id, artifact_path="weights/model.npz", tracking_uri=f"sqlite:///{dest / 'mlflow.db'}"
    )
    assert Path(weights).read_bytes() == (dest / "models" / "model.npz").read_bytes()
    assert str(dest / "mlartifacts") in only.info.artifact_uri


def test_second_repro_is_a_no_op(project):
    dest, env, _ = project
    before = len(runs(dest))
    out = run(["dvc", "repro"], dest, env).stdout
    assert "Running stage" not in out and "up to date" in out
    assert len(runs(dest)) == before


def test_a_fresh_clone_on_other_kernels_reproduces_every_committed_output_byte_for_byte(project, tmp_path):
    # As a new user on another CPU: clone (no DVC cache, no data) and rerun every stage with other
    # OpenBLAS kernels, threads and NumPy dispatch than the lock was recorded with. The portable
    # numerics give the same bits: git status stays clean (dvc.lock and reports/ hold no run ids or
    # timings), and the one new run has the committed test scores.
    dest, env, _ = project
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-qm", "outputs", "--allow-empty"], dest, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(dest), str(clone)], tmp_path, env)
    other = {"OPENBLAS_CORETYPE": "Sandybridge", "OPENBLAS_NUM_THREADS": "2", "NPY_DISABLE_CPU_FEATURES": "X86_V4"}
    out = run(["dvc", "repro", "--force"], clone, {**env, **other}).stdout
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
    assert run(["git", "status", "--porcelain"], clone, env).stdout == ""
    (new,) = runs(clone)
    committed = json.loads((clone / "reports" / "metrics.json").read_text())
    assert {k: new.data.metrics[k] for k in committed} == committed and new.data.tags["git_dirty"] == "false"
    assert (
        new.data.tags["numerics.mode"] == "portable"
        and "Haswell kernels, 1 thread" in new.data.tags["numerics.blas.scipy"]
    )


def test_exp_run_with_set_params_composes_conf_and_reruns_only_training(project):
    """`dvc exp run -S` after a selection was made with `make params`: the experiment composes conf/
    with both, and only training reruns (the project keeps both for the tests after this one)."""
    dest, env, _ = project
    env = {**env, "MNIST_MIRROR": "/nonexistent"}  # download must not rerun: it would fail
    run([sys.executable, "pipelines/compose_params.py", "model.init=he", "train.seed=3"], dest, env)
    out = run(
        ["dvc", "exp", "run", "-n", "wide", "-S", "model.hidden_size=32", "-S", "train.lr=0.05"], dest, env
    ).stdout
    assert "Running stage 'train'" in out and "Running stage 'normalize'" not in out
    params = yaml.safe_load((dest / "params.yaml").read_text())
    assert params["model"]["hidden_size"] == 32 and params["train"]["lr"] == 0.05
    assert (params["model"]["init"], params["train"]["seed"]) == ("he", 3)  # the selection survives
    assert params["train"]["epochs"] == EPOCHS  # the rest still comes from conf/

    newest = runs(dest)[-1]
    assert newest.data.params["model.hidden_size"] == "32" and newest.data.tags["dvc.exp_name"] == "wide"
    assert newest.data.params["model.init"] == "he"
    assert newest.info.run_name == f"wide h32-lr0.05-b32-e{EPOCHS}"
    workspace = json.loads((dest / "reports" / "metrics.json").read_text())  # the experiment's, applied
    assert newest.data.metrics["test_accuracy"] == pytest.approx(workspace["test_accuracy"])

    shown = json.loads(run(["dvc", "exp", "show", "--json"], dest, env).stdout)
    exps = [e for baseline in shown for e in (baseline.get("experiments") or [])]
    wide = [e for e in exps if e.get("name") == "wide"]
    assert wide, shown
    data = wide[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["model"]["hidden_size"] == 32
    assert data["metrics"]["reports/metrics.json"]["data"]["test_accuracy"] == pytest.approx(workspace["test_accuracy"])

    # The plain table in a 160-column terminal: the test score and the most swept param come first,
    # no dataset definition among the columns.
    table = run(["dvc", "exp", "show", "--no-pager"], dest, {**env, "COLUMNS": "160"}).stdout
    lines = table.splitlines()
    header = lines[1].split()
    assert max(map(len, lines)) <= 160 and "wide" in table
    assert header[2:3] == ["test_accuracy"] and "model.hidden_size" in header, header
    assert "mirrors" not in table and "sha256" not in table and "440fcabf" not in table

    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], dest, env).stdout)[""]["data"]
    assert metrics["reports/metrics.json"]["data"] == pytest.approx(workspace)
    assert metrics["reports/training.json"]["data"]["kept_epoch"] == EPOCHS
    # `dvc plots show` through the template `make setup` writes (.dvc/config names it), opened
    # without a network: each of the three plots is drawn (its marks are in its SVG).
    offline_template = REPO / ".dvc" / "offline_plots.html"
    if offline_template.is_file():
        shutil.copy(offline_template, dest / ".dvc")
    else:
        run([sys.executable, "pipelines/offline_plots.py"], dest, env)
    run(["dvc", "plots", "show", "-o", "dvc_plots"], dest, env)
    html = (dest / "dvc_plots" / "index.html").read_text()
    assert "Test confusion matrix" in html and "Accuracy per epoch" in html and "cdn.jsdelivr" not in html
    with browser_page(offline=True) as page:
        page.goto((dest / "dvc_plots" / "index.html").as_uri())
        page.locator("svg .role-mark").first.wait_for(timeout=30_000)
        plots = page.locator("body > div:has(svg)")
        assert plots.count() == 3
        for i in range(3):
            assert plots.nth(i).locator("svg .role-mark path, svg .role-mark text").count() > 2, plots.nth(
                i
            ).inner_html()[:300]


def test_bad_params_fail_fast_without_outputs_or_running_mlflow_runs(project, tmp_path):
    dest, env, _ = project
    before = len(runs(dest))
    bad = tmp_path / "params.yaml"
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["train"]["batch_size"] = 0
    bad.write_text(yaml.safe_dump(params))
    done = run(
        [sys.executable, "pipelines/train.py", "--params", str(bad), "--models", str(tmp_path / "m")],
        dest,
        env,
        check=False,
    )
    assert done.returncode == 2 and "train.batch_size" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "m").exists() and len(runs(dest)) == before


@pytest.mark.filterwarnings("ignore")
def test_diverging_training_marks_the_run_failed_and_writes_no_weights(project, tmp_path):
    dest, env, _ = project
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["train"].update(lr=1e20, epochs=1)
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    done = run(
        [
            sys.executable,
            "pipelines/train.py",
            "--params",
            str(bad),
            "--models",
            str(tmp_path / "m"),
            "--reports",
            str(tmp_path / "r"),
        ],
        dest,
        env,
        check=False,
    )
    assert done.returncode == 3 and "non-finite" in done.stderr, done.stderr
    assert not (tmp_path / "m" / "model.npz").exists() and not (tmp_path / "r").exists()
    newest = runs(dest)[-1]
    assert newest.info.status == "FAILED" and newest.data.params["train.lr"] == str(1e20)
    assert not [r for r in runs(dest) if r.info.status == "RUNNING"]


def test_a_failed_override_says_how_to_recover_and_the_run_cache_restores_without_retraining(project):
    dest, env, _ = project
    run(["dvc", "repro"], dest, env)  # whatever earlier tests left, consistent with dvc.lock
    good, before = (dest / "params.yaml").read_text(), len(runs(dest))
    params = yaml.safe_load(good)
    params["train"]["batch_size"] = 0
    (dest / "params.yaml").write_text(yaml.safe_dump(params))
    failed = run(["dvc", "repro"], dest, env, check=False)
    (line,) = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert failed.returncode != 0 and "train.batch_size" in line, failed.stderr
    assert line.endswith("the previous outputs come back with: git checkout params.yaml && dvc checkout")
    assert not (dest / "models" / "model.npz").exists()  # DVC removed the outputs before the stage ran

    (dest / "params.yaml").write_text(good)
    again = run(["dvc", "repro"], dest, env)
    assert "Stage 'train' is cached - skipping run" in again.stdout and "Running stage" not in again.stdout
    assert "up to date" in run(["dvc", "status"], dest, env).stdout
    assert len(runs(dest)) == before and not [r for r in runs(dest) if r.info.status == "RUNNING"]


def test_dvc_repro_warns_when_conf_was_edited_but_not_composed(project, tmp_path):
    _, env, _ = project
    copy = copy_of(project, tmp_path)  # the edited conf/ stays recorded in this copy's dvc.lock
    sgd = copy / "conf" / "train" / "sgd.yaml"
    sgd.write_text(sgd.read_text().replace(f"epochs: {EPOCHS}", f"epochs: {EPOCHS + 1}"))
    status = run(["dvc", "status"], copy, env).stdout  # visible before any repro
    assert status.startswith("conf:") and "modified:" in status, status
    done = run(["dvc", "repro"], copy, env)
    (warning,) = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert f"train.epochs: {EPOCHS} in params.yaml, {EPOCHS + 1} in conf/" in warning and "make params" in warning
    assert "Running stage 'conf'" in done.stdout and "Running stage 'train'" not in done.stdout


def test_queued_experiments_log_into_the_repository_store(project):
    dest, env, _ = project
    run(["git", "add", "-A"], dest, env)  # the baseline the queue starts from, with dvc.lock
    run(["git", "commit", "-qm", "baseline", "--allow-empty"], dest, env)
    before = len(runs(dest))
    run(["dvc", "exp", "run", "--queue", "-S", "train.lr=0.02,0.3"], dest, env)
    # The workers DVC starts keep the streams of `dvc queue start` open until they exit: captured, the
    # call would wait for the whole queue. Not captured, it returns at once and the status is polled.
    started = subprocess.run(
        ["dvc", "queue", "start", "-j", "2"],
        cwd=dest,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
    assert started.returncode == 0
    # Asked of DVC (a 2 s process) every 15 s while the runs train, every second once they ended.
    deadline, asked = time.monotonic() + 600, 0.0
    while time.monotonic() < deadline:
        new = runs(dest)[before:]
        if (len(new) < 2 or any(r.info.status == "RUNNING" for r in new)) and time.monotonic() - asked < 15:
            time.sleep(1)
            continue
        status, asked = run(["dvc", "queue", "status"], dest, env).stdout, time.monotonic()
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(1)
    logs = "".join(
        f"\n--- {log.name}\n{log.read_text()[-3000:]}"
        for log in (dest / ".dvc" / "tmp" / "exps" / "celery").rglob("*.out")
    )
    run(["dvc", "queue", "stop", "--kill"], dest, env, check=False)
    assert "Success" in status and "Failed" not in status, status + logs

    new = runs(dest)[before:]
    assert sorted(r.data.params["train.lr"] for r in new) == ["0.02", "0.3"]
    assert all(r.info.status == "FINISHED" and 0 < r.data.metrics["test_accuracy"] <= 1 for r in new)
    assert all(r.data.tags.get("dvc.exp_name") and r.data.tags["git_dirty"] == "false" for r in new)
    assert not list((dest / ".dvc" / "tmp").rglob("mlflow.db"))  # nothing stranded in DVC's temporary copies
    shown = json.loads(run(["dvc", "exp", "show", "--json"], dest, env).stdout)
    by_name = {e["name"]: e["revs"][0]["data"] for baseline in shown for e in (baseline.get("experiments") or [])}
    for r in new:
        exp = by_name[r.data.tags["dvc.exp_name"]]
        assert exp["metrics"]["reports/metrics.json"]["data"]["test_accuracy"] == pytest.approx(
            r.data.metrics["test_accuracy"]
        )

    # make exps: at most 30 columns, no dependency hashes, the experiments best test accuracy first.
    table = run([sys.executable, "pipelines/exps.py", "--csv"], dest, env).stdout
    header, *rows = [line.split(",") for line in table.splitlines()]
    assert len(header) <= 30 and "train.lr" in header and not [h for h in header if "/" in h], header
    named = [row for row in rows if row[header.index("Experiment")] in by_name]
    scores = [float(row[header.index("test_accuracy")]) for row in named]
    assert len(named) == len(by_name) >= 2 and scores == sorted(scores, reverse=True), table


def processes_in(folder: Path, script: str = "") -> list[int]:
    """Pids of running processes whose working directory is in `folder` (and that run `script`)."""

    def there(proc) -> bool:
        return Path(proc.cwd()).is_relative_to(folder) and any(arg.endswith(script) for arg in proc.cmdline())

    return [proc.pid for proc in processes.matching(there)]


def copy_of(project, tmp_path: Path) -> Path:
    """A copy of the built project, for a test that changes its workspace for good."""
    copy = tmp_path / "copy"
    shutil.copytree(project[0], copy, symlinks=True)
    return copy


def test_a_second_dataset_is_one_file_and_one_selection(project, tmp_path):
    # As docs/architecture.md tells a newcomer: conf/dataset/<name>.yaml (names, checksums, mirrors),
    # then `make params ARGS=data.dataset=<name>`; dvc.yaml takes the file from params.yaml.
    _, env, _ = project
    copy = copy_of(project, tmp_path)
    paths = write_tiny_mnist(tmp_path / "tiny-mirror", n_train=300, n_test=50)
    definition = yaml.safe_load((copy / "conf" / "dataset" / "mnist.yaml").read_text())
    definition["mirrors"] = [(tmp_path / "tiny-mirror").as_uri() + "/"]
    definition["files"] = {key: {"name": p.name, "sha256": sha256_file(p)} for key, p in paths.items()}
    (copy / "conf" / "dataset" / "tiny.yaml").write_text(yaml.safe_dump(definition))
    run([sys.executable, "pipelines/compose_params.py", "data.dataset=tiny", "data.val_size=50"], copy, env)
    out = run(["dvc", "repro"], copy, {k: v for k, v in env.items() if k != "MNIST_MIRROR"}).stdout
    assert all(f"Running stage '{stage}'" in out for stage in ("download", "normalize", "train", "evaluate"))
    lock = yaml.safe_load((copy / "dvc.lock").read_text())["stages"]
    assert "conf/dataset/tiny.yaml" in lock["download"]["cmd"]
    assert {d["path"] for d in lock["normalize"]["deps"]} >= {"conf/dataset/tiny.yaml", "data/raw"}
    assert json.loads((copy / "reports" / "classification.json").read_text())["confusion_matrix"]
    assert sum(map(sum, json.loads((copy / "reports" / "classification.json").read_text())["confusion_matrix"])) == 50
    latest = runs(copy)[-1]
    assert {d.dataset.name for d in latest.inputs.dataset_inputs} == {"tiny-train", "tiny-val", "tiny-test"}
    digests = json.loads(latest.data.tags["data.sha256"])
    assert digests["train-images-idx3-ubyte.gz"] == sha256_file(paths["train_images"])


def test_a_stopped_dvc_does_not_leave_its_stage_training(project, tmp_path):
    _, env, _ = project
    copy = copy_of(project, tmp_path)  # this test leaves a half-run workspace behind
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["train"]["epochs"] = 100000
    (copy / "params.yaml").write_text(yaml.safe_dump(params))
    dvc = Watched(["dvc", "repro", "-s", "train"], copy, env)
    dvc.wait_for_line("epoch 3/100000")
    assert len(processes_in(copy, "pipelines/train.py")) == 1
    dvc.stop(signal.SIGKILL)  # DVC gets no chance to clean up or pass a signal on
    wait_for(lambda: not processes_in(copy, "pipelines/train.py"), timeout=30, what="the stage to stop")
    newest = runs(copy)[-1]
    assert (
        newest.info.status == "KILLED"
        and len(store(copy).get_metric_history(newest.info.run_id, "epoch/val_accuracy")) >= 3
    )


def test_dvc_push_then_pull_into_a_fresh_clone_leaves_nothing_to_reproduce(project, tmp_path):
    _, env, _ = project
    dest = copy_of(project, tmp_path)
    remote = tmp_path / "remote"  # the repository's `shared` remote, pointed here for this test only
    run(["dvc", "remote", "modify", "--local", "shared", "url", str(remote)], dest, env)
    run(["dvc", "repro"], dest, env)  # whatever earlier tests left in the workspace, consistent with dvc.lock
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-qm", "results", "--allow-empty"], dest, env)
    run(["dvc", "push"], dest, env)
    assert len([p for p in remote.rglob("*") if p.is_file()]) >= 6  # 4 raw files, 3 splits + stats, weights

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(dest), str(clone)], tmp_path, env)
    run(["dvc", "remote", "modify", "--local", "shared", "url", str(remote)], clone, env)
    # What a sweep job does on a node without the prepared data: only data/processed/, from the remote.
    fetch = [
        sys.executable,
        "-c",
        "from pathlib import Path; from mnist_np.experiments import job_data; job_data.fetch_processed(Path.cwd())",
    ]
    # Four jobs starting at once on that node: one pulls, the others wait for it; all four go on.
    jobs = [subprocess.Popen(fetch, cwd=clone, env=env, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for job in jobs:
        assert job.wait(timeout=300) == 0, job.stderr.read()
    assert (clone / "data" / "processed" / "train.npz").is_file() and not (clone / "models").exists()
    run(["dvc", "pull"], clone, env)
    for name in ("models/model.npz", "data/processed/train.npz", "data/raw/t10k-labels-idx1-ubyte.gz"):
        assert (clone / name).read_bytes() == (dest / name).read_bytes(), name
    assert "up to date" in run(["dvc", "status"], clone, env).stdout
    again = run(["dvc", "repro"], clone, env)
    assert "Running stage" not in again.stdout + again.stderr
    assert not (clone / "mlflow.db").exists()  # nothing trained, so no run was logged

    # A damaged copy on the remote: the SHA-256 the normalize stage recorded catches it, and it is removed.
    val = (dest / "data" / "processed" / "val.npz").read_bytes()
    (blob,) = [p for p in remote.rglob("*") if p.is_file() and p.read_bytes() == val]
    blob.chmod(0o644)
    blob.write_bytes(val[:1000] + bytes([val[1000] ^ 0xFF]) + val[1001:])
    damaged = tmp_path / "damaged"
    run(["git", "clone", "-q", str(dest), str(damaged)], tmp_path, env)
    run(["dvc", "remote", "modify", "--local", "shared", "url", str(remote)], damaged, env)
    failed = run(fetch, damaged, env, check=False)
    assert failed.returncode != 0 and "val.npz" in failed.stderr and "damaged" in failed.stderr, failed.stderr
    assert not (damaged / "data" / "processed").exists()
    cached = [p for p in (damaged / ".dvc" / "cache").rglob("*") if p.is_file() and p.read_bytes()[:1000] == val[:1000]]
    assert not cached  # gone from the node's DVC cache too: the next pull fetches it again
