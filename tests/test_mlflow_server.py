"""A sweep logging to a real `mlflow server` on 127.0.0.1, checked through the server's REST API."""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import SOURCE, api, browser_page, drawn_marks, migrated_store, project_config, sweep, write_tiny_mnist
from mnist_np.data import splits
from mnist_np.experiments import RANK_METRIC
from mnist_np.tracking import ui
from mnist_np.tracking.server import local_server

# One server and one 4-job sweep into it for both tests (~40 s each to set up): one worker runs them.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tracking-server")]


@dataclass(frozen=True)
class Swept:
    server: str
    work: Path
    artifacts: Path
    printed: list[str]  # what the sweep wrote, stdout then stderr


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Iterator[Swept]:
    """A real `mlflow server` on 127.0.0.1 (SQLite, artifacts served from a folder of its own) and a
    4-job sweep into it on two joblib slots, as a team member's machine would run it."""
    tmp = tmp_path_factory.mktemp("server")
    backend, artifacts = migrated_store(tmp / "server.db"), tmp / "server-artifacts"
    write_tiny_mnist(tmp / "raw")
    cfg = project_config("data.val_size=20")  # as the tiny_mnist fixture
    work = tmp / "work"
    splits.save(work / "data" / "processed", *splits.prepare(tmp / "raw", cfg.data, SOURCE))
    with local_server(backend, "--artifacts-destination", str(artifacts)) as url:
        env = {**os.environ, "MLFLOW_TRACKING_URI": url}
        args = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.hidden_size=8,16", "train.lr=0.05,0.1")
        done = sweep(work, env, *args)
        yield Swept(url, work, artifacts, (done.stdout + done.stderr).strip().splitlines())


def test_sweep_runs_arrive_at_a_tracking_server(swept):
    server = swept.server
    experiment = api(server, "experiments/get-by-name?experiment_name=mnist")["experiment"]
    found = api(server, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in found]
    parents = [r for r, t in zip(found, tags) if t.get("sweep") == "parent"]
    children = [r for r, t in zip(found, tags) if t.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 4
    assert all(r["info"]["status"] == "FINISHED" for r in found)
    for child in children:
        metrics = {m["key"] for m in child["data"]["metrics"]}
        assert {"epoch/val_accuracy", "test_accuracy", "test_loss"} <= metrics
        listed = api(server, f"artifacts/list?run_id={child['info']['run_id']}&path=weights")
        assert [f["path"] for f in listed["files"]] == ["weights/model.npz"]
    # The artifacts went to the server's destination, not to a local mlartifacts/ folder.
    assert list(swept.artifacts.rglob("model.npz")) and not (swept.work / "mlartifacts").exists()


def test_the_printed_link_and_report_answer_the_sweep_in_a_real_browser(swept, tmp_path):
    """What a 4-job sweep prints last, opened as a person would, in the distribution's Chromium
    (Playwright) with a fresh profile: the link shows the best run in the first row with its accuracy
    and swept parameters in view, no GenAI page and no pop-up; the report, offline and on a
    phone-sized screen, names the best run first and draws its figures."""
    server, printed = swept.server, swept.printed
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
