"""Links into the MLflow UI that answer a question without clicks: a run's page, and a sweep's runs
table sorted best first with its scores and swept parameters as columns.

MLflow 3.17 keeps the runs table's sort and filter in the page's URL but its columns only in the
browser (localStorage), so a fresh browser shows no metric or parameter. Its "shared view" is the
one way to hand columns over in a link: the UI reads the view from the experiment tag
`mlflow.sharedViewState.<key>` named by the URL's `viewStateShareKey` (MLflow's own Share button
writes the same tag). A sweep writes its view there when it ends.
"""

from __future__ import annotations

import json
import shlex
import urllib.error
import urllib.parse
import urllib.request

import mlflow
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

# MLflow 3.17's UI opens every experiment on its GenAI overview unless the URL asks for the
# model-training views (the experiment-kind tag does not change that), so our links ask.
TRAINING_VIEWS = "workflowType=machine_learning"
SHARED_VIEW_TAG = "mlflow.sharedViewState."  # + the key; read by the UI's runs page
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def ui_base(uri: str | None = None) -> str:
    """The UI that shows the store: the tracking server itself, or `mlflow ui` on its default port."""
    uri = uri or mlflow.get_tracking_uri()
    return uri.rstrip("/") if urllib.parse.urlparse(uri).scheme in ("http", "https") else LOCAL_UI


def ui_page(base: str, experiment_id: str, run_id: str | None = None, query: str = "") -> str:
    """The UI page of an experiment's runs table, or of one run, in the model-training views."""
    path = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
    return f"{path}/{run_id}?{query}{TRAINING_VIEWS}" if run_id else f"{path}?{query}{TRAINING_VIEWS}"


def run_link(experiment_id: str, run_id: str, uri: str | None = None) -> str:
    """Where a person sees the run: its curves (the model-metrics tab of its page) in the MLflow UI
    (the server's, or `mlflow ui`'s)."""
    return ui_page(ui_base(uri), experiment_id, f"{run_id}/model-metrics")


def column(kind: str, name: str) -> str:
    """A runs-table column as the UI names it (its canonical sort key): metrics.`kept_val_accuracy`."""
    return f"{kind}.`{name}`"


def sweep_view(
    client: MlflowClient, experiment_id: str, parent_id: str, metrics: list[str], params: list[str], tags: list[str]
) -> str:
    """Save the sweep's runs table as a shared view and return its link: the parent's children only,
    sorted by the first of `metrics` (highest first), with `metrics`, the swept `params` and `tags`
    as the columns."""
    key = f"sweep-{parent_id[:12]}"
    state = {
        "searchFilter": f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}'",
        "orderByKey": column("metrics", metrics[0]),
        "orderByAsc": False,
        "selectedColumns": [
            *(column("metrics", m) for m in metrics),
            *(column("params", p) for p in params),
            *(column("tags", t) for t in tags),
        ],
    }
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + key, json.dumps(state))
    return ui_page(ui_base(client.tracking_uri), experiment_id, query=f"viewStateShareKey={key}&")


def ui_hint(uri: str | None = None, ui: str = LOCAL_UI) -> str | None:
    """How to start the UI a local store's link points at, on a line of its own; None for a
    tracking server (it is the UI) or when something already answers at `ui`."""
    uri = uri or mlflow.get_tracking_uri()
    if urllib.parse.urlparse(uri).scheme in ("http", "https"):
        return None
    try:
        with urllib.request.urlopen(ui, timeout=0.5):
            return None
    except urllib.error.HTTPError:
        return None  # it answers
    except (OSError, ValueError):
        return f"start the UI with: mlflow ui --backend-store-uri {shlex.quote(uri)}"
