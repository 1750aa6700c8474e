"""The local cluster end to end: `make cluster-up` (PostgreSQL, an MLflow server on it, a Ray head
and a worker node), a sweep through the Ray launcher started outside the project, an Optuna study
shared by two sweep processes on PostgreSQL, `make cluster-down`, and nothing left running.
Checked through the server's REST API and the database itself."""

from __future__ import annotations

import concurrent.futures
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy
from mlflow import MlflowClient

from helpers import REPO, SOURCE, api, project_config, run, sweep_cmd, wait_for, write_tiny_mnist
from mnist_np import processes
from mnist_np.data import splits
from mnist_np.model import reference, weights
from mnist_np.tracking import store
from mnist_np.tracking.server import server_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster")]  # conftest.py: why a group


def pg_ctl() -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return str(found[-1]) if found else shutil.which("pg_ctl")


def postgres_available() -> bool:
    return pg_ctl() is not None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, mnist_mirror):
    """(environment with the cluster's addresses, project copy, cluster folder) for a cluster of the
    test's own, apart from any a developer runs."""
    if not postgres_available():
        if os.environ.get("MNIST_NP_REQUIRE_CLUSTER"):
            pytest.fail("PostgreSQL not found, and .ci/run requires it (apt-get install postgresql)")
        pytest.skip("PostgreSQL not found (apt-get install postgresql); CI installs it and runs this test")
    base = Path(tempfile.mkdtemp(prefix="mnist-np-cluster-"))
    base.chmod(0o755)  # PostgreSQL runs as its own user when the tests run as root
    args = f"CLUSTER_ARGS=--dir {base / 'state'} --env-file {base / 'cluster.env'}"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    run(["make", "cluster-up", args], REPO, env, timeout=300)
    for line in (base / "cluster.env").read_text().splitlines():
        if line.startswith("export "):
            key, value = line[len("export ") :].split("=", 1)
            env[key] = value
    # A project of its own (the checkout's files, tiny prepared data), so no test writes into the checkout.
    project = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", "conf", "pipelines"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, project / name)
    tiny = tmp_path_factory.mktemp("tiny")
    write_tiny_mnist(tiny)
    cfg = project_config("data.val_size=20")
    splits.save(project / "data" / "processed", *splits.prepare(tiny, cfg.data, SOURCE))
    yield env, project, base
    run(["make", "cluster-down", args], REPO, env, check=False)  # a no-op once the last test stopped it
    shutil.rmtree(base, ignore_errors=True)


def project_sweep(env: dict, project: Path, cwd: Path, *overrides: str, prefix: tuple = ()) -> subprocess.Popen:
    """A sweep of the project copy started from `cwd` (not the project), as a running process; one
    epoch a job unless `overrides` say otherwise."""
    epochs = [] if any(o.startswith("train.epochs=") for o in overrides) else ["train.epochs=1"]
    cmd = sweep_cmd(cwd, *epochs, *overrides)
    cmd[1] = str(project / "pipelines" / "sweep.py")
    return subprocess.Popen(
        [*prefix, *cmd], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


# A process in its own pid namespace is pid 1 there, as in a container (unprivileged where the
# kernel allows user namespaces, as Debian's does).
AS_PID_1 = ("unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc")


def in_session(proc, sid: int) -> bool:
    try:
        return os.getsid(proc.pid) == sid
    except ProcessLookupError:  # it ended meanwhile
        return False


def pid_namespaces() -> bool:
    probe = [*AS_PID_1, sys.executable, "-c", "import os; print(os.getpid())"]
    try:
        return subprocess.run(probe, capture_output=True, text=True, timeout=30).stdout.strip() == "1"
    except (OSError, subprocess.TimeoutExpired):
        return False


def finished(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def test_two_sweep_processes_share_one_optuna_study_on_postgres(cluster, tmp_path):
    """Two sweep processes with the same seed and, as in two containers, the same pid (1, each in its
    own pid namespace where the machine allows) share one study on PostgreSQL. Its first trials are
    queued: two that learn (200 epochs: each process takes one), then four that crawl (lr 1e-5 and
    up). The median pruner acts once two trials have finished (n_startup_trials=2), so every crawling
    trial is pruned against both learners' reports, the other process's among them, and each process
    prunes some. Then each proposes trials of its own: distinct, though both were given the same seed."""
    env, project, _ = cluster
    study, storage = f"team-{os.getpid()}", env["MNIST_NP_OPTUNA_STORAGE"]
    queued = optuna.create_study(study_name=study, storage=storage, direction="maximize")
    learners, crawlers = (0.3, 0.25), (1e-5, 2e-5, 3e-5, 4e-5)
    for lr in learners + crawlers:  # out of the searched ranges (Optuna warns), as a user's own guesses may be
        queued.enqueue_trial({"train.lr": lr, "train.epochs": 200})
    args = ["hydra/sweeper=mnist_optuna", f"hydra.sweeper.study_name={study}", "hydra.sweeper.n_trials=8"]
    args += ["train.batch_size=choice(16,32)", "train.epochs=int(interval(1,1))", "hydra.sweeper.seed=7"]
    args += ["hydra.sweeper.pruner=median", "+hydra.sweeper.pruner_args.n_startup_trials=2"]
    as_pid_1 = AS_PID_1 if pid_namespaces() else ()
    workers = [
        project_sweep(env, project, tmp_path, *args, f"hydra.sweep.dir={tmp_path / str(i)}", prefix=as_pid_1)
        for i in range(2)
    ]
    for worker in workers:
        finished(worker)
    trials = optuna.load_study(study_name=study, storage=storage).trials
    assert len(trials) in (8, 9)  # the study's 8, together; each process may start one past it
    by_lr = {t.params["train.lr"]: t for t in trials}
    assert len(by_lr) == len(trials)  # no trial repeated another: the proposed ones differ too
    assert [by_lr[lr].state.name for lr in learners] == ["COMPLETE"] * 2
    assert [by_lr[lr].state.name for lr in crawlers] == ["PRUNED"] * 4
    learned = max(by_lr[lr].datetime_complete for lr in learners)
    assert all(by_lr[lr].datetime_complete >= learned for lr in crawlers)  # pruned once both had finished
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}

    server = env["MLFLOW_TRACKING_URI"]
    experiment = api(server, "experiments/get-by-name?experiment_name=mnist")["experiment"]
    search = {"experiment_ids": [experiment["experiment_id"]], "filter": f"tags.`optuna.study_name` = '{study}'"}
    parents = api(server, "runs/search", search)["runs"]
    assert len(parents) == 2  # both sweeps' parents, grouped under the study
    for parent in parents:  # each process ran a learner and pruned crawlers against the other's
        search["filter"] = f"tags.`mlflow.parentRunId` = '{parent['info']['run_id']}'"
        children = api(server, "runs/search", search)["runs"]
        lrs = {
            float(next(p["value"] for p in c["data"]["params"] if p["key"] == "train.lr")): c["info"]["status"]
            for c in children
        }
        assert [lr for lr in learners if lrs.get(lr) == "FINISHED"], lrs
        assert [lr for lr in crawlers if lrs.get(lr) == "KILLED"], lrs
    if as_pid_1:
        assert [t["value"] for p in parents for t in p["data"]["tags"] if t["key"] == "process.pid"] == ["1", "1"]
    seeds = {t["value"] for p in parents for t in p["data"]["tags"] if t["key"] == "optuna.sampler_seed"}
    assert len(seeds) == 2  # each process drew its own sampler seed, recorded on its parent


def test_sweeps_starting_together_on_an_empty_database_all_get_the_study_tables(cluster, tmp_path):
    """Optuna creates its tables on first use; processes that do so at the same moment collide in
    PostgreSQL (duplicate table), and the losers must retry rather than fail the sweep."""
    env, _, _ = cluster
    server = env["MNIST_NP_OPTUNA_STORAGE"].rsplit("/", 1)[0]
    database = f"race_{os.getpid()}"
    with sqlalchemy.create_engine(f"{server}/mlflow", isolation_level="AUTOCOMMIT").connect() as db:
        db.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))
    # The collision made certain however loaded the machine: the test holds Optuna's first table,
    # created in a transaction of its own and not committed, so every process that reaches its own
    # CREATE TABLE waits on it in PostgreSQL; once all 16 wait, the test rolls back and they collide.
    code = (
        "import logging, sys; from mnist_np.experiments.optuna_sweeper import open_storage; "
        "logging.basicConfig(level=logging.INFO); open_storage(sys.argv[1])"
    )
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND wait_event_type = 'Lock'"
    procs = []
    with sqlalchemy.create_engine(f"{server}/{database}").connect() as holder:
        held = holder.begin()
        holder.execute(sqlalchemy.text("CREATE TABLE studies (study_id integer)"))
        try:
            for _ in range(16):
                cmd = [sys.executable, "-c", code, f"{server}/{database}"]
                procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            # Autocommit: pg_stat_activity is a snapshot that lasts as long as the reading transaction.
            with sqlalchemy.create_engine(f"{server}/mlflow", isolation_level="AUTOCOMMIT").connect() as watch:
                wait_for(
                    lambda: watch.execute(sqlalchemy.text(waiting), {"db": database}).scalar() >= 16,
                    timeout=120,
                    what="16 processes waiting on the held table",
                )
        finally:
            held.rollback()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 16, "\n".join(errors)
    assert any("creating Optuna's tables" in e for e in errors), "no process had to retry: no race happened"
    with sqlalchemy.create_engine(f"{server}/{database}").connect() as db:
        assert db.execute(sqlalchemy.text("SELECT count(*) FROM version_info")).scalar() == 1
        assert db.execute(sqlalchemy.text("SELECT count(*) FROM alembic_version")).scalar() == 1


def test_sweeps_starting_together_on_a_new_experiment_all_open_it(cluster, monkeypatch):
    """Every sweep marks its experiment's kind for the UI; two started together on a new experiment
    both find the mark missing and both write it, and the server's second insert of the row breaks
    its unique key. Made certain: the test inserts the row itself in a transaction it holds open, so
    each request to the server waits on it in PostgreSQL; once two wait (the server's two workers),
    the test commits and both inserts fail. Each sweep's setup must then find the mark there and go on."""
    env, _, _ = cluster
    server = env["MLFLOW_TRACKING_URI"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    name = f"together-{os.getpid()}"
    experiment_id = MlflowClient(server).create_experiment(name)  # as a first sweep's setup would, without the mark
    database = env["MNIST_NP_OPTUNA_STORAGE"].rsplit("/", 1)[0] + "/mlflow"
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'mlflow' AND wait_event_type = 'Lock'"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        with sqlalchemy.create_engine(database).connect() as holder:
            held = holder.begin()
            holder.execute(
                sqlalchemy.text("INSERT INTO experiment_tags (key, value, experiment_id) VALUES (:k, :v, :e)"),
                {"k": store.EXPERIMENT_KIND, "v": "custom_model_development", "e": int(experiment_id)},
            )
            try:
                opened = [pool.submit(store.setup, name, REPO) for _ in range(2)]
                with sqlalchemy.create_engine(database, isolation_level="AUTOCOMMIT").connect() as watch:
                    wait_for(
                        lambda: watch.execute(sqlalchemy.text(waiting)).scalar() >= 2,
                        timeout=60,
                        what="both sweeps' marks waiting on the held row",
                    )
            finally:
                held.commit()
        assert [future.result(timeout=60) for future in opened] == [experiment_id] * 2
    assert MlflowClient(server).get_experiment(experiment_id).tags[store.EXPERIMENT_KIND] == "custom_model_development"


def test_runs_logged_at_once_all_arrive(cluster, tmp_path):
    """The load test of the server (benchmarks/tracking_load.py, which measures with 16 processes of
    30 epochs), smaller: 2 processes each log a full run at once; every run, metric step and artifact
    arrives, at the server and at a SQLite store."""
    env, project, _ = cluster
    weights.save(tmp_path / "model.npz", reference.init_params(10, np.random.default_rng(0)))
    out = tmp_path / "load.json"
    stats = project / "data" / "processed" / splits.STATS_FILE
    cmd = [sys.executable, str(REPO / "benchmarks" / "tracking_load.py"), "--weights", str(tmp_path / "model.npz")]
    run([*cmd, "--stats", str(stats), "--processes", "2", "--epochs", "3", "--out", str(out)], tmp_path, env)
    result = json.loads(out.read_text())
    for kind in ("server", "sqlite"):
        assert result[kind]["complete"] and result[kind]["runs"] == 2, result[kind]
        assert result[kind]["metric_values"] == 2 * 3 * 5 and result[kind]["metric_writes_per_s"] > 0
        assert result[kind]["artifact_mb_per_s"] > 0
    # The same files in both stores: the weights and the servable model's, for each run.
    assert result["server"]["artifact_files"] == result["sqlite"]["artifact_files"] >= 2 * 2


def test_an_optuna_sweep_on_ray_prunes_through_postgres_and_refills_the_freed_slot(cluster, tmp_path):
    """Optuna on the Ray launcher, the study on PostgreSQL, its trials queued in a known order: trial
    0 learns for 400 epochs on one node's CPU while the other takes trial 1 (3 epochs), then trial 2
    (lr 1e-5: the median pruner stops it after its first epoch, reported from the Ray task through
    the database), before trial 0 ends (150 epochs were not always enough: a loaded machine starts
    Ray's tasks slowly)."""
    env, project, _ = cluster
    study, storage = f"ray-pruning-{os.getpid()}", env["MNIST_NP_OPTUNA_STORAGE"]
    queued = optuna.create_study(study_name=study, storage=storage, direction="maximize")
    for lr, epochs in ((0.3, 400), (0.3, 3), (1e-5, 400)):
        queued.enqueue_trial({"train.lr": lr, "train.epochs": epochs})
    args = ["hydra/launcher=mnist_ray", "hydra/sweeper=mnist_optuna", f"hydra.sweeper.study_name={study}"]
    args += ["hydra.sweeper.n_trials=3", "hydra.sweeper.pruner=median", "+hydra.sweeper.pruner_args.n_startup_trials=1"]
    args += ["train.lr=choice(0.3,0.00001)", "train.epochs=choice(3,400)", "train.batch_size=16", "model.hidden_size=8"]
    finished(project_sweep(env, project, tmp_path, *args, f"hydra.sweep.dir={tmp_path / 'sweep'}"))

    trials = optuna.load_study(study_name=study, storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert trials[2].last_step == 1 and len(trials[0].intermediate_values) == 400
    server = env["MLFLOW_TRACKING_URI"]
    experiment_id = api(server, "experiments/get-by-name?experiment_name=mnist")["experiment"]["experiment_id"]
    body = {"experiment_ids": [experiment_id], "filter": f"tags.`optuna.study_name` = '{study}'"}
    (parent,) = api(server, "runs/search", body)["runs"]
    body["filter"] = f"tags.`mlflow.parentRunId` = '{parent['info']['run_id']}'"
    jobs = {}
    for found in api(server, "runs/search", body)["runs"]:
        tags = {t["key"]: t["value"] for t in found["data"]["tags"]}
        jobs[tags["sweep.job"]] = (found["info"], tags)
    pruned_info, pruned_tags = jobs["2"]
    assert pruned_info["status"] == "KILLED" and pruned_tags["pruned_at_epoch"] == "1"
    history = api(server, f"metrics/get-history?run_id={pruned_info['run_id']}&metric_key=epoch/val_accuracy")
    assert [m["step"] for m in history["metrics"]] == [1]  # its epoch kept
    # The slot trial 1 freed took trial 2 at once, while trial 0 still ran in the other.
    assert int(jobs["1"][0]["end_time"]) <= int(pruned_info["start_time"]) < int(jobs["0"][0]["end_time"])
    assert len({t["ray.node_id"] for _, t in jobs.values()}) == 2  # trial 0 on one node, 1 and 2 on the other


def test_a_ray_sweep_survives_a_lost_node_and_restarts_of_its_database_and_tracking_server(cluster, tmp_path):
    """Faults injected into a 4-job Ray sweep through the real processes: the worker node killed
    outright while it runs a job (Ray runs the job again), PostgreSQL restarted, the MLflow server
    killed; while it is away the worker node is brought back (`make cluster-status RESTART=ray_worker`)
    and a queued job starts on it and waits for the server; then the server is started again by hand
    with its command line (new pid). Every job ends FINISHED with all its epochs, one run per job (the
    retried job's run continued), nothing RUNNING; `cluster-down` (the last test) then stops the
    restarted server too. The sweep runs from a folder outside the project, as a team member's would:
    its runs, computed as the sweep computes, are rows of the PostgreSQL database behind the server,
    their weights in the server's artifact store, nothing in that folder."""
    env, project, base = cluster
    server, state_dir = env["MLFLOW_TRACKING_URI"], base / "state"
    state = json.loads((state_dir / "state.json").read_text())
    epochs, sweep_dir = 300, tmp_path / "sweep"
    grid = ["hydra/launcher=mnist_ray", "train.lr=0.05,0.1", "model.hidden_size=8,16", f"train.epochs={epochs}"]
    sweep = project_sweep(env, project, tmp_path, *grid, f"hydra.sweep.dir={sweep_dir}")

    def experiment() -> str | None:  # created by the sweep, unless an earlier test's run did
        with contextlib.suppress(urllib.error.HTTPError):
            return api(server, "experiments/get-by-name?experiment_name=mnist")["experiment"]["experiment_id"]

    experiment_id = wait_for(experiment, timeout=120, what="the sweep's experiment")

    def search(filter_string: str) -> list[dict]:
        body = {"experiment_ids": [experiment_id], "filter": filter_string, "max_results": 100}
        return api(server, "runs/search", body).get("runs", [])

    def tags(found: dict) -> dict[str, str]:
        return {t["key"]: t["value"] for t in found["data"].get("tags", [])}

    wait_for(lambda: search(f"tags.`sweep.dir` = '{sweep_dir}'"), timeout=120, what="the sweep's parent run")
    (parent,) = search(f"tags.`sweep.dir` = '{sweep_dir}'")
    children = f"tags.`mlflow.parentRunId` = '{parent['info']['run_id']}'"
    worker = state["ray_worker"]["pid"]

    def session(run: dict) -> int | None:  # of the job's process (its tag is set just after the run opens)
        pid = int(tags(run).get("process.pid", 0))
        try:
            return os.getsid(pid) if pid and processes.alive(pid) else None
        except ProcessLookupError:
            return None

    def on_worker() -> list[dict]:  # running jobs whose process is in the worker node's session
        return [r for r in search(f"{children} AND attributes.status = 'RUNNING'") if session(r) == worker]

    (lost,) = wait_for(on_worker, timeout=120, what="a job running on the worker node")  # it has 1 CPU
    node = [p for p in processes.matching(lambda p: in_session(p, worker))]
    for proc in node:  # the node dies outright: no process of it gets to clean up
        proc.kill()

    pg = state["postgres"]
    restart = [pg_ctl(), "-D", pg["data"], "-l", str(state_dir / "postgres.log"), "-m", "fast", "-w", "restart"]
    run(["runuser", "-u", "postgres", "--", *restart] if os.geteuid() == 0 else restart, REPO, env)

    old = processes.psutil.Process(state["mlflow"]["pid"])
    command = old.cmdline()
    os.killpg(old.pid, signal.SIGKILL)
    wait_for(lambda: not processes.answers(server), timeout=30, what="the MLflow server gone")
    status = subprocess.run(
        ["make", "cluster-status", f"CLUSTER_ARGS=--dir {state_dir} --env-file {base / 'cluster.env'}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode != 0 and "mlflow      DOWN" in status.stdout and "ray_worker  DOWN" in status.stdout, (
        status.stdout
    )
    args = f"CLUSTER_ARGS=--dir {state_dir} --env-file {base / 'cluster.env'}"
    restarted = run(["make", "cluster-status", "RESTART=ray_worker", args], REPO, env, timeout=300)
    assert "restarted: ray_worker" in restarted.stdout and not processes.answers(server)
    new_worker = json.loads((state_dir / "state.json").read_text())["ray_worker"]["pid"]

    def job_on_new_worker() -> list:  # Ray names a worker process by the task it runs
        return processes.matching(lambda p: in_session(p, new_worker) and "ray::execute_job" in " ".join(p.cmdline()))

    wait_for(job_on_new_worker, timeout=120, what="a job started on the new worker while the server is away")
    time.sleep(3)  # it has found the server away and is waiting (backoff 1, 2, 4 s)
    with open(state_dir / "mlflow-by-hand.log", "ab") as log:  # as a person would restart it (docs/scaling.md)
        subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=server_env())
    wait_for(lambda: processes.answers(server), timeout=120, what="the MLflow server back")

    out = finished(sweep)
    assert f"the MLflow tracking server {server} does not answer" in out and "trying again in" in out
    jobs = search(children)
    assert len(jobs) == 4, [tags(j).get("mlflow.runName") for j in jobs]  # one run per job
    assert sorted(tags(j)["sweep.job"] for j in jobs) == ["0", "1", "2", "3"]
    assert {j["info"]["status"] for j in jobs} == {"FINISHED"}
    for job in jobs:
        history = api(server, f"metrics/get-history?run_id={job['info']['run_id']}&metric_key=epoch/val_accuracy")
        assert {m["step"] for m in history["metrics"]} == set(range(1, epochs + 1))
    retried = tags(next(j for j in jobs if j["info"]["run_id"] == lost["info"]["run_id"]))
    assert retried["sweep.attempt"] == "2" and "attempt 1" in retried["sweep.lost_attempts"], retried
    assert (
        "failure" not in retried and retried["ray.node_id"] != tags(lost)["ray.node_id"]
    )  # the head node ran it again
    parent_tags = tags(api(server, f"runs/get?run_id={parent['info']['run_id']}")["run"])
    assert parent_tags["sweep.children"] == "4" and parent_tags["sweep.failed_jobs"] == "0"
    assert not search("attributes.status = 'RUNNING'")

    assert "Connected to Ray cluster" in out
    # Ray's workers computed as the sweep does (MNIST_NP_NUMERICS through the launcher's runtime_env).
    assert {tags(j)["numerics.mode"] for j in jobs} == {"portable"}
    assert all("Haswell kernels, 1 thread" in tags(j)["numerics.blas.scipy"] for j in jobs)
    for job in jobs:
        listed = api(server, f"artifacts/list?run_id={job['info']['run_id']}&path=weights")
        assert [f["path"] for f in listed["files"]] == ["weights/model.npz"]
    engine = sqlalchemy.create_engine(env["MNIST_NP_OPTUNA_STORAGE"].rsplit("/", 1)[0] + "/mlflow")
    with engine.connect() as db:  # the runs are rows of the database behind the server
        ids = [j["info"]["run_id"] for j in jobs]
        rows = db.execute(sqlalchemy.text("SELECT status FROM runs WHERE run_uuid = ANY(:ids)"), {"ids": ids}).all()
    engine.dispose()
    assert sorted(status for (status,) in rows) == ["FINISHED"] * 4
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


def started_pids(base: Path) -> set[int]:
    """The pids of the processes `up` started."""
    return {part["pid"] for part in json.loads((base / "state" / "state.json").read_text()).values()}


def cluster_processes(base: Path, started: set[int]) -> dict[int, str]:
    """Pid -> command line of every live process of the cluster: those `up` started (`started`), what
    they started (in their sessions), and anything else running from the cluster's folder."""

    def ours(proc) -> bool:
        return proc.pid in started or os.getsid(proc.pid) in started or str(base) in " ".join(proc.cmdline())

    return {proc.pid: " ".join(proc.cmdline()) for proc in processes.matching(ours)}


def loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.rsplit(":", 1)[0])
    return ip.is_loopback or bool(ip.version == 6 and ip.ipv4_mapped and ip.ipv4_mapped.is_loopback)


def test_every_cluster_process_listens_on_the_loopback_only(cluster):
    _, _, base = cluster
    found = cluster_processes(base, started_pids(base))
    addresses = processes.listening(found)
    names = {found[pid].split()[0].rsplit("/", 1)[-1] for pid in addresses.values()}
    assert {"gcs_server", "raylet", "postgres"} <= names, names  # the check sees the cluster's servers
    outside = {address: found[pid][:100] for address, pid in addresses.items() if not loopback(address)}
    assert not outside, outside


def test_cluster_down_leaves_nothing_running(cluster):
    env, _, base = cluster
    started = started_pids(base)
    assert cluster_processes(base, started)
    run(["make", "cluster-down", f"CLUSTER_ARGS=--dir {base / 'state'} --env-file {base / 'cluster.env'}"], REPO, env)
    left = [f"{pid}: {cmdline[:120]}" for pid, cmdline in cluster_processes(base, started).items()]
    assert not left, left
    assert not (base / "cluster.env").exists() and not (base / "state" / "state.json").exists()
