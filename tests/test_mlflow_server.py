"""A sweep logging to a real `mlflow server` on 127.0.0.1, checked through the server's REST API."""

from __future__ import annotations

import os
import shutil
import sys

import pytest
from PIL import Image

from helpers import REPO, SOURCE, api, migrated_store, run, sweep
from mnist_np.data import splits
from mnist_np.tracking.server import local_server

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path):
    backend, artifacts = migrated_store(tmp_path / "server.db"), str(tmp_path / "server-artifacts")
    with local_server(backend, "--artifacts-destination", artifacts) as url:
        yield url


def test_sweep_runs_arrive_at_a_tracking_server(server, tiny_mnist, tmp_path):
    raw_dir, cfg = tiny_mnist
    work = tmp_path / "work"
    splits.save(work / "data" / "processed", *splits.prepare(raw_dir, cfg.data, SOURCE))
    env = {**os.environ, "MLFLOW_TRACKING_URI": server}
    sweep(work, env, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.hidden_size=8,16")

    experiment = api(server, "experiments/get-by-name?experiment_name=mnist")["experiment"]
    found = api(server, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in found]
    parents = [r for r, t in zip(found, tags) if t.get("sweep") == "parent"]
    children = [r for r, t in zip(found, tags) if t.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 2
    assert all(r["info"]["status"] == "FINISHED" for r in found)
    for child in children:
        metrics = {m["key"] for m in child["data"]["metrics"]}
        assert {"val_accuracy", "test_accuracy", "test_loss"} <= metrics
        listed = api(server, f"artifacts/list?run_id={child['info']['run_id']}&path=weights")
        assert [f["path"] for f in listed["files"]] == ["weights/model.npz"]
    # The artifacts went to the server's destination, not to a local mlartifacts/ folder.
    assert list((tmp_path / "server-artifacts").rglob("model.npz")) and not (work / "mlartifacts").exists()


def test_the_ui_shows_a_sweeps_runs_in_a_real_browser(server, tiny_mnist, tmp_path):
    """The MLflow UI in headless Chromium (the distribution's, via Playwright), through the README's
    screenshot command: the runs table and the compare view show every child's run name."""
    if not shutil.which("chromium") and not os.environ.get("CHROMIUM"):
        if os.environ.get("MNIST_NP_REQUIRE_BROWSER"):
            pytest.fail("no Chromium found, and .ci/run requires one (apt-get install chromium)")
        pytest.skip("no Chromium found (apt-get install chromium); CI installs it and runs this test")
    raw_dir, cfg = tiny_mnist
    work = tmp_path / "work"
    splits.save(work / "data" / "processed", *splits.prepare(raw_dir, cfg.data, SOURCE))
    env = {**os.environ, "MLFLOW_TRACKING_URI": server}
    sweep(work, env, "model.hidden_size=8,16", "train.lr=0.05,0.1")
    experiment = api(server, "experiments/get-by-name?experiment_name=mnist")["experiment"]
    found = api(server, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    children = [r for r in found if {"key": "sweep", "value": "parent"} not in r["data"]["tags"]]
    names = sorted(r["info"]["run_name"] for r in children)
    assert len(names) == 4

    shots = tmp_path / "shots"
    done = run(
        [sys.executable, str(REPO / "docs" / "screenshots.py"), "--tracking-uri", server, "--out", str(shots)], REPO
    )
    assert f"runs shown: {', '.join(names)}" in done.stdout
    for name in ("sweep-runs", "sweep-compare"):
        with Image.open(shots / f"{name}.png") as image:
            assert image.size == (1600, 900)
            assert len(image.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50  # a rendered page, not blank
