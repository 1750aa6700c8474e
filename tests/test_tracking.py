"""Per-epoch metrics reach the real MLflow store (SQLite) in batches, with their epochs as steps,
also when a stage fails after training; git tags; the process that owns a run, and its heartbeat."""

import http.server
import json
import os
import socket
import sqlite3
import subprocess
import threading
import time

import mlflow
import psutil
import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from helpers import SOURCE, http_server, migrated_store
from mnist_np import processes
from mnist_np.data import splits
from mnist_np.errors import DataError, UserError
from mnist_np.experiments import stages
from mnist_np.tracking import liveness, runs, server, store, ui


def history(run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key))


def test_epochs_wait_for_the_interval_then_arrive_in_one_batch_with_their_steps():
    experiment = store.setup("epochs")
    with mlflow.start_run(experiment_id=experiment) as run:
        epochs = runs.EpochMetrics(interval_s=3600)
        for epoch in (1, 2, 3):
            epochs.log({"val_accuracy": 0.5 + epoch / 10, "val_loss": 1.0 / epoch}, step=epoch)
        assert history(run.info.run_id, "val_accuracy") == []
        epochs.flush()
        assert history(run.info.run_id, "val_accuracy") == [(1, 0.6), (2, 0.7), (3, 0.8)]
        assert history(run.info.run_id, "val_loss") == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
        epochs.flush()  # nothing pending: writes nothing twice
        assert len(history(run.info.run_id, "val_loss")) == 3


def test_an_elapsed_interval_sends_everything_pending_at_once():
    experiment = store.setup("epochs")
    with mlflow.start_run(experiment_id=experiment) as run:
        epochs = runs.EpochMetrics(interval_s=0)
        epochs.log({"train_loss": 2.0}, step=1)
        assert history(run.info.run_id, "train_loss") == [(1, 2.0)]
        epochs.log({"train_loss": 1.0}, step=2)
        assert history(run.info.run_id, "train_loss") == [(1, 2.0), (2, 1.0)]


def test_git_tags_name_the_commit_and_whether_tracked_code_changed(tmp_path):
    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True
        )

    git("init", "-q")
    assert runs.git_tags(tmp_path) == {}  # no commit yet: nothing to name
    (tmp_path / "src").mkdir()
    for name in ("src/a.py", "params.yaml", "metrics.json"):
        (tmp_path / name).write_text("one")
    git("add", ".")
    git("commit", "-qm", "first")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "src" / "untracked.py").write_text("not part of the commit")
    # What DVC does to a clean checkout: outputs removed before a stage runs, params rewritten by -S.
    (tmp_path / "metrics.json").unlink()
    (tmp_path / "params.yaml").write_text("two")
    assert runs.git_tags(tmp_path) == {MLFLOW_GIT_COMMIT: head, "git_dirty": "false"}
    (tmp_path / "src" / "a.py").write_text("two")
    assert runs.git_tags(tmp_path) == {MLFLOW_GIT_COMMIT: head, "git_dirty": "true"}


def test_a_train_stage_that_fails_after_training_still_logs_every_epoch(tiny_mnist, tmp_path):
    mirror, cfg = tiny_mnist
    processed = tmp_path / "processed"
    splits.save(processed, *splits.prepare(mirror, cfg.data, SOURCE))
    data = stages.load_training_data(cfg, processed)
    (processed / splits.STATS_FILE).unlink()  # logging the served model needs it: fails after training
    experiment = store.setup("fails-late")
    with (
        pytest.raises(DataError, match="stats.json not found"),
        mlflow.start_run(experiment_id=experiment) as run,
    ):
        stages.train(cfg, data, tmp_path, tmp_path / "training.csv", progress=False)
    assert [step for step, _ in history(run.info.run_id, "epoch/val_accuracy")] == [1, 2]
    assert MlflowClient().get_run(run.info.run_id).info.status == "FAILED"


@pytest.mark.slow  # a real mlflow server process: 3-5 s
def test_a_local_server_that_cannot_start_says_why_and_leaves_nothing_running():
    """server.local_server (the screenshots' and the server tests' MLflow server) with a store MLflow
    refuses: a UserError carrying the server's own reason, and no server process left."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with (
        pytest.raises(UserError, match="mlflow server did not start:(.|\n)*nonsense://x"),
        server.local_server("nonsense://x"),
    ):
        pass
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before


@pytest.mark.slow  # MLflow's own migration of a store, to compare with: ~1.5 s
def test_a_new_sqlite_store_is_a_copy_with_the_schema_mlflow_itself_would_create(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    started_ms = time.time() * 1000
    for name in ("first.db", "second.db"):  # the first builds the template, the second copies it
        with store._one_process_at_a_time(f"sqlite:///{tmp_path / name}"):
            pass
    assert (tmp_path / "cache" / "mnist-np" / f"mlflow-{mlflow.__version__}-tables.db").is_file()
    MlflowClient(f"sqlite:///{tmp_path / 'own.db'}").search_experiments()  # MLflow migrates this one itself

    def schema(name: str) -> list:
        """Every table, index and its definition (its lines in any order: MLflow's migrations list a
        table's constraints in an order that varies from one interpreter to the next), and the revision."""
        with sqlite3.connect(tmp_path / name) as db:
            found = db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
            revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
        return [
            (kind, item, sorted(line.strip(" ,") for line in (sql or "").splitlines())) for kind, item, sql in found
        ] + revision

    assert schema("second.db") == schema("own.db")
    # MLflow adds its Default experiment when it opens the copy: made now, not when the template was.
    default = MlflowClient(f"sqlite:///{tmp_path / 'second.db'}").get_experiment("0")
    assert default.name == "Default" and default.creation_time >= started_ms
    # A cache that cannot be written (here a file stands where its folder would be): MLflow migrates.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "own.db"))
    with store._one_process_at_a_time(f"sqlite:///{tmp_path / 'third.db'}"):
        MlflowClient(f"sqlite:///{tmp_path / 'third.db'}").search_experiments()
    assert schema("third.db") == schema("own.db")


def test_a_run_is_dead_when_its_process_is_gone_or_its_heartbeat_from_another_host_stopped():
    me, now = liveness.owner_tags(), time.time()
    assert liveness.why_dead(me, now) is None  # this very process
    assert liveness.why_dead({}, now) is None  # a run that never said who runs it is left alone
    reused = {**me, liveness.STARTED_TAG: f"{float(me[liveness.STARTED_TAG]) - 100:.2f}"}  # the pid, another process
    assert "ended without closing it" in liveness.why_dead(reused, now)
    child = subprocess.Popen(["true"])
    child.wait()
    assert "ended without closing it" in liveness.why_dead({**me, liveness.PID_TAG: str(child.pid)}, now)
    elsewhere = {**me, liveness.HOST_TAG: "another-host"}
    assert liveness.why_dead({**elsewhere, liveness.HEARTBEAT_TAG: f"{now - 60:.0f}"}, now) is None
    stale = liveness.why_dead({**elsewhere, liveness.HEARTBEAT_TAG: f"{now - 660:.0f}"}, now)
    assert stale == f"its process (pid {me[liveness.PID_TAG]} on another-host) has sent no heartbeat for 11 minutes"
    # Another container on this host (its own pid namespace: pids there are not ours to look at).
    container = {**reused, liveness.PID_NAMESPACE_TAG: "1"}
    assert liveness.why_dead({**container, liveness.HEARTBEAT_TAG: f"{now - 60:.0f}"}, now) is None
    assert "no heartbeat for 11 minutes" in liveness.why_dead(
        {**container, liveness.HEARTBEAT_TAG: f"{now - 660:.0f}"}, now
    )


def test_an_open_run_names_its_process_and_beats_until_it_ends(monkeypatch):
    monkeypatch.setattr(liveness, "HEARTBEAT_S", 0.05)
    experiment = store.setup("heartbeat")
    with liveness.start_run(experiment_id=experiment) as run:
        first = MlflowClient().get_run(run.info.run_id).data.tags
        assert first[liveness.PID_TAG] == str(os.getpid()) and first[liveness.HOST_TAG] == socket.gethostname()
        assert processes.wait_until(lambda: heartbeat(run.info.run_id) != first[liveness.HEARTBEAT_TAG], 10)
    assert not [t for t in threading.enumerate() if t.name.startswith("heartbeat-")]  # stopped with the run
    assert MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"


def heartbeat(run_id: str) -> str:
    return MlflowClient().get_run(run_id).data.tags[liveness.HEARTBEAT_TAG]


def test_the_ui_hint_quotes_the_store_and_is_left_out_when_a_ui_answers(tmp_path):
    local = f"sqlite:///{tmp_path / 'my prøject ü' / 'mlflow.db'}"
    with socket.create_server((processes.HOST, 0)) as taken:  # a port nothing serves HTTP on
        nothing = f"http://{processes.HOST}:{taken.getsockname()[1]}"
    assert ui.ui_hint(local, nothing) == f"start the UI with: mlflow ui --backend-store-uri '{local}'"
    with http_server(http.server.SimpleHTTPRequestHandler) as answering:
        assert ui.ui_hint(local, answering) is None
    assert ui.ui_hint("http://127.0.0.1:5001", nothing) is None  # a server is its own UI


def test_a_sweeps_link_carries_its_view_in_the_experiment(tmp_path):
    """The link names a shared view; the view, in the experiment tag MLflow's UI reads, filters the
    parent's children, sorts by the first metric, highest first, and names the columns."""
    client = MlflowClient(migrated_store(tmp_path / "m.db"))
    experiment_id = client.create_experiment("mnist")
    parent = "0123456789abcdef0123456789abcdef"
    link = ui.sweep_view(client, experiment_id, parent, ["kept_val_accuracy", "test_accuracy"], ["train.lr"], [])
    assert link == (
        f"{ui.LOCAL_UI}/#/experiments/{experiment_id}/runs?viewStateShareKey=sweep-0123456789ab&workflowType=machine_learning"
    )
    view = json.loads(client.get_experiment(experiment_id).tags[ui.SHARED_VIEW_TAG + "sweep-0123456789ab"])
    assert view == {
        "searchFilter": f"tags.`mlflow.parentRunId` = '{parent}'",
        "orderByKey": "metrics.`kept_val_accuracy`",
        "orderByAsc": False,
        "selectedColumns": ["metrics.`kept_val_accuracy`", "metrics.`test_accuracy`", "params.`train.lr`"],
    }
    served = MlflowClient("http://127.0.0.1:5001")  # a server's links point at the server
    assert ui.ui_base(served.tracking_uri) == "http://127.0.0.1:5001"


@pytest.mark.slow  # waits 3 s for the server, by design
def test_a_sweep_job_waits_for_a_tracking_server_that_comes_back():
    """A restarted server (here: one that starts listening 2 s late) is waited for with backoff by a
    job given wait_s; a command given none fails at once with the same one line."""
    with socket.create_server((processes.HOST, 0)) as reserved:
        port = reserved.getsockname()[1]
    uri = f"http://{processes.HOST}:{port}"
    with pytest.raises(UserError, match=f"the MLflow tracking server {uri} does not answer"):
        store.check_store(uri)

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    servers = []

    def serve() -> None:  # bound only now: until then nothing listens on the port
        servers.append(http.server.ThreadingHTTPServer((processes.HOST, port), Health))
        servers[0].serve_forever(poll_interval=0.05)

    start = time.monotonic()
    threading.Timer(2.0, serve).start()
    try:
        store.check_store(uri, wait_s=60)  # refused at 0 s and 1 s, answered at 3 s
        assert 2 <= time.monotonic() - start < 10
    finally:
        processes.wait_until(lambda: servers, 10)
        servers[0].shutdown()
        servers[0].server_close()
