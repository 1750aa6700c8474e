"""A sweep logging to a real `mlflow server` on 127.0.0.1, checked through the server's REST API."""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from pathlib import Path

import pytest

from helpers import SOURCE, api, browser_page, drawn_marks, migrated_store, sweep
from mnist_np.data import splits
from mnist_np.experiments import RANK_METRIC
from mnist_np.tracking import ui
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
        assert {"epoch/val_accuracy", "test_accuracy", "test_loss"} <= metrics
        listed = api(server, f"artifacts/list?run_id={child['info']['run_id']}&path=weights")
        assert [f["path"] for f in listed["files"]] == ["weights/model.npz"]
    # The artifacts went to the server's destination, not to a local mlartifacts/ folder.
    assert list((tmp_path / "server-artifacts").rglob("model.npz")) and not (work / "mlartifacts").exists()


def test_the_printed_link_and_report_answer_the_sweep_in_a_real_browser(server, tiny_mnist, tmp_path):
    """What a 4-job sweep prints last, opened as a person would, in the distribution's Chromium
    (Playwright) with a fresh profile: the link shows the best run in the first row with its accuracy
    and swept parameters in view, no GenAI page and no pop-up; the report, offline and on a
    phone-sized screen, names the best run first and draws its figures."""
    raw_dir, cfg = tiny_mnist
    work = tmp_path / "work"
    splits.save(work / "data" / "processed", *splits.prepare(raw_dir, cfg.data, SOURCE))
    env = {**os.environ, "MLFLOW_TRACKING_URI": server}
    done = sweep(work, env, "model.hidden_size=8,16", "train.lr=0.05,0.1")
    printed = (done.stdout + done.stderr).strip().splitlines()
    assert "best first" in printed[-1], "\n".join(printed[-8:])
    link = re.search(r"the sweep.s runs, best first: (\S+)$", printed[-1])[1]  # the very last line
    report = Path(next(re.search(r"the sweep's report: (\S+)$", line)[1] for line in printed if "report:" in line))
    experiment = api(server, "experiments/get-by-name?experiment_name=mnist")["experiment"]
    found = api(server, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    children = [r for r in found if {"key": "sweep", "value": "parent"} not in r["data"]["tags"]]
    assert len(children) == 4
    score = {
        r["info"]["run_name"]: next(m["value"] for m in r["data"]["metrics"] if m["key"] == RANK_METRIC)
        for r in children
    }
    best = max(score, key=score.get)
    params = {
        p["key"]: p["value"] for p in next(r for r in children if r["info"]["run_name"] == best)["data"]["params"]
    }

    with browser_page(1600, 900) as page:
        page.goto(link)
        first = page.locator('[row-index="0"]')
        first.locator('[col-id="attributes.`Run Name`"]').wait_for(timeout=60_000)
        table = page.locator(".ag-root-wrapper").bounding_box()
        seen = {}
        for column in (
            f"metrics.`{RANK_METRIC}`",
            "metrics.`test_accuracy`",
            "params.`model.hidden_size`",
            "params.`train.lr`",
        ):
            cell = first.locator(f'[col-id="{column}"]').first
            box = cell.bounding_box()
            assert box and box["x"] + box["width"] <= table["x"] + table["width"] and box["y"] + box["height"] <= 900, (
                column
            )
            seen[column] = cell.inner_text()
        assert best in first.locator('[col-id="attributes.`Run Name`"]').inner_text()
        assert float(seen[f"metrics.`{RANK_METRIC}`"]) == pytest.approx(score[best], abs=1e-4)
        assert seen["params.`model.hidden_size`"] == params["model.hidden_size"]
        assert seen["params.`train.lr`"] == params["train.lr"]
        assert "/runs?" in page.url and page.get_by_role("dialog").count() == 0
        assert "Detect Issues" not in page.inner_text("body")  # the GenAI overview's pop-up
        # The README's screenshots (make screenshots sets MNIST_NP_SCREENSHOTS=docs/img): this page
        # as the link opens it, and the compare view of the sweep's runs once each run is on it.
        shots = Path(os.environ.get("MNIST_NP_SCREENSHOTS") or tmp_path)
        page.screenshot(path=shots / "sweep-runs.png")
        ids = [r["info"]["run_id"] for r in children]
        page.goto(
            f"{server}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}"
            f"&experiments={urllib.parse.quote(json.dumps([experiment['experiment_id']]))}&{ui.TRAINING_VIEWS}"
        )
        for name in score:
            page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)  # let the charts settle
        page.screenshot(path=shots / "sweep-compare.png")
        # A run's link (what a pipeline run prints) opens its page on the curves, above the totals.
        best_id = next(r["info"]["run_id"] for r in children if r["info"]["run_name"] == best)
        page.goto(ui.run_link(experiment["experiment_id"], best_id, server))
        curve, total = (
            page.get_by_text("val_accuracy", exact=True),
            page.get_by_text(re.compile(r"^Model metrics \(\d+\)$")),
        )
        curve.first.wait_for(timeout=60_000)
        assert curve.first.bounding_box()["y"] + 200 < 900  # the curve's chart is on the first screen
        assert total.count() == 0 or total.first.bounding_box()["y"] > curve.first.bounding_box()["y"]

    with browser_page(390, 844, offline=True) as phone:
        phone.goto(report.as_uri())
        assert phone.locator("table.ranked tbody tr").first.locator("td").first.inner_text() == best
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        assert phone.locator("figure svg").count() >= 4 and drawn_marks(phone) > 200
