"""Per-epoch metrics reach the real MLflow store (SQLite) in batches, with their epochs as steps,
also when a stage fails after training; git tags."""

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from mnist_np import tracking


def history(run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key))


def test_epochs_wait_for_the_interval_then_arrive_in_one_batch_with_their_steps():
    experiment = tracking.setup("epochs")
    with mlflow.start_run(experiment_id=experiment) as run:
        epochs = tracking.EpochMetrics(interval_s=3600)
        for epoch in (1, 2, 3):
            epochs.log({"val_accuracy": 0.5 + epoch / 10, "val_loss": 1.0 / epoch}, step=epoch)
        assert history(run.info.run_id, "val_accuracy") == []
        epochs.flush()
        assert history(run.info.run_id, "val_accuracy") == [(1, 0.6), (2, 0.7), (3, 0.8)]
        assert history(run.info.run_id, "val_loss") == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
        epochs.flush()  # nothing pending: writes nothing twice
        assert len(history(run.info.run_id, "val_loss")) == 3


def test_an_elapsed_interval_sends_everything_pending_at_once():
    experiment = tracking.setup("epochs")
    with mlflow.start_run(experiment_id=experiment) as run:
        epochs = tracking.EpochMetrics(interval_s=0)
        epochs.log({"train_loss": 2.0}, step=1)
        assert history(run.info.run_id, "train_loss") == [(1, 2.0)]
        epochs.log({"train_loss": 1.0}, step=2)
        assert history(run.info.run_id, "train_loss") == [(1, 2.0), (2, 1.0)]


def test_git_tags_name_the_commit_and_whether_tracked_files_changed(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    assert tracking.git_tags(tmp_path) == {}  # no commit yet: nothing to name
    (tmp_path / "a.txt").write_text("one")
    git("add", "a.txt")
    git("commit", "-qm", "first")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "untracked.txt").write_text("ignored")
    assert tracking.git_tags(tmp_path) == {"git_commit": head, "git_dirty": "false"}
    (tmp_path / "a.txt").write_text("two")
    assert tracking.git_tags(tmp_path) == {"git_commit": head, "git_dirty": "true"}


def test_a_train_stage_that_fails_after_training_still_logs_every_epoch(tiny_mnist, tmp_path):
    from mnist_np import data, stages

    mirror, cfg = tiny_mnist
    processed = tmp_path / "processed"
    data.save(processed, *data.prepare(mirror, cfg.data))
    (processed / data.STATS_FILE).unlink()  # logging the served model needs it: fails after training
    experiment = tracking.setup("fails-late")
    with pytest.raises(Exception), mlflow.start_run(experiment_id=experiment) as run:
        stages.train(cfg, processed, tmp_path / "model.npz", tmp_path / "training.csv", progress=False)
    assert [step for step, _ in history(run.info.run_id, "val_accuracy")] == [1, 2]
    assert MlflowClient().get_run(run.info.run_id).info.status == "FAILED"
