"""The README's MLflow UI screenshots, taken in a real headless Chromium (Playwright).

    make screenshots              # the newest sweep in the project's store -> docs/img/*.png
    python docs/screenshots.py --tracking-uri http://127.0.0.1:5000 --sweep <parent run id> --out DIR

Opens the experiment's runs table (the sweep's children) and the compare view of those runs,
waits until every child's run name is on the page, and saves both pages. For a local store it starts
`mlflow server` on a free 127.0.0.1 port for the duration. Exits 1 with `error: ...` when a page does
not show the runs. Needs Chromium from the distribution (apt-get install chromium); Playwright's own
browser download is never used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE_TIMEOUT_MS = 60_000


def chromium() -> str | None:
    """$CHROMIUM, else the distribution's chromium on PATH."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def ui_server(tracking_uri: str):
    """The base URL of an MLflow UI for the store: the server itself, or one started here."""
    from mnist_np.tracking import server

    if urllib.parse.urlparse(tracking_uri).scheme in ("http", "https"):
        yield tracking_uri.rstrip("/")
        return
    with server.local_server(tracking_uri) as base:
        yield base


def capture(
    base: str, experiment_id: str, parent: str, runs: dict[str, str], out: Path, browser_path: str
) -> list[Path]:
    """Screenshots of the runs table filtered to `runs` ({run id: run name}, the children of the
    sweep named `parent`) and of their compare view; raises RuntimeError naming the runs a page did
    not show."""
    from playwright.sync_api import Error, sync_playwright

    from mnist_np.tracking.store import ui_page

    ids = ", ".join(f"'{run_id}'" for run_id in runs)
    table = f"{ui_page(base, experiment_id)}&searchFilter={urllib.parse.quote(f'attributes.run_id IN ({ids})')}"
    compare = (
        f"{base}/#/compare-runs?runs={urllib.parse.quote(json.dumps(list(runs)))}"
        f"&experiments={urllib.parse.quote(json.dumps([experiment_id]))}"
    )
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            for name, url in (("sweep-runs", table), ("sweep-compare", compare)):
                page.goto(url)
                if name == "sweep-runs":  # the children are nested under their parent: expand it
                    row = page.locator("[role=row]").filter(has_text=parent).first
                    try:
                        row.wait_for(timeout=PAGE_TIMEOUT_MS)
                        row.locator('[col-id*="Run Name"] button').first.click()
                    except Error as exc:
                        raise RuntimeError(f"{url} does not show the sweep's parent run") from exc
                missing = list(runs.values())
                deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
                while missing and time.monotonic() < deadline:
                    page.wait_for_timeout(500)
                    missing = [n for n in missing if not page.get_by_text(n, exact=True).count()]
                if missing:
                    raise RuntimeError(f"{url} does not show the runs {missing}")
                assistant = page.get_by_role("button", name="Close")  # MLflow's assistant panel, if open
                if assistant.count():
                    assistant.first.click()
                page.wait_for_timeout(1000)  # let charts settle
                page.screenshot(path=out / f"{name}.png")
                saved.append(out / f"{name}.png")
        finally:
            browser.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", help="the MLflow store or server (default: the project's store)")
    parser.add_argument("--sweep", default="latest", help="a sweep's parent run id, or 'latest' (default: latest)")
    parser.add_argument("--out", default=str(REPO / "docs" / "img"), help="where to save (default: docs/img)")
    parser.add_argument("--experiment", default="mnist", help="the MLflow experiment (default: mnist)")
    args = parser.parse_args()

    import mlflow

    from mnist_np.experiments.compare import latest_sweep
    from mnist_np.tracking import store

    uri = args.tracking_uri or store.tracking_uri()
    browser_path = chromium()
    if not browser_path:
        raise SystemExit(
            "error: no Chromium found; install the distribution's (apt-get install chromium) or set CHROMIUM"
        )
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"error: no experiment {args.experiment!r} in {uri}; run a sweep first (make results)")
    parent = latest_sweep(experiment.experiment_id) if args.sweep == "latest" else args.sweep
    children = mlflow.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=8
    )
    if children.empty:
        raise SystemExit(f"error: sweep {parent} has no child runs in {uri}")
    runs = dict(zip(children["run_id"], children["tags.mlflow.runName"]))
    with ui_server(uri) as base:
        try:
            name = mlflow.get_run(parent).info.run_name
            saved = capture(base, experiment.experiment_id, name, runs, Path(args.out), browser_path)
        except RuntimeError as exc:
            raise SystemExit(f"error: {exc}") from None
    print("runs shown:", ", ".join(sorted(runs.values())))
    for path in saved:
        print("saved", path)


if __name__ == "__main__":
    from mnist_np import cli

    cli.run(main)
