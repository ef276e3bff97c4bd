"""The MLflow UI's first screen: the latest sweep's runs side by side, not the GenAI overview.

MLflow 3's UI starts every experiment in GenAI mode (traces, token usage) unless the page's URL says
``workflowType=machine_learning``; ``mlflow.experimentKind`` is no longer what picks it. Its runs page
restores a *saved view* from the experiment tag ``mlflow.sharedViewState.<key>`` when opened with
``?viewStateShareKey=<key>``; ``compareRunsMode`` (``TABLE`` or ``CHART``) picks table or charts. So
this module writes one saved view (the name the UI lists it under: ``VIEW_NAME``) and returns the URLs
that open it; no server is needed to compute them, and the UI stays MLflow's own.

The view: the children of the newest parent run (a sweep's schemes) or, when the newest run has no
parent, every run of the experiment; the evaluation metrics (``final_*``: exact expected values per
impression, the same for every reward scheme) as columns, best ``final_reward_graded`` first, and one
bar chart per evaluation metric; the remaining metrics (learning curves) in a collapsed chart section.

Envelope of the tag's value, as the UI writes it (MLflow 3.17)::

    {"name": str, "createdAt": ms, "updatedAt": ms,
     "state": "deflate;" + base64(zlib(JSON of search facets + UI state))}
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from mlflow import MlflowClient
from mlflow.entities import Experiment, Run

SHARE_KEY = "recsys-rl"
VIEW_TAG = f"mlflow.sharedViewState.{SHARE_KEY}"
VIEW_NAME = "recsys-rl: latest comparison"
PARENT_TAG = "mlflow.parentRunId"
# The evaluation every training run reports whatever its reward (see evaluation.py), most telling first.
EVALUATION_METRICS = (
    "reward_graded",
    "reward_ctr",
    "reward_purchase",
    "reward_revenue",
    "ctr",
    "purchases_per_impression",
    "revenue_per_impression",
    "multi_purchases_per_impression",
    "kl_to_reference",
    "oracle_gap_closed",
)
MAX_COLUMNS = 12  # runs without the evaluation metrics (e.g. a KL sweep's budgets) show this many of theirs
EVALUATION_SECTION = "evaluation"
OTHER_SECTION = "Model metrics"  # the UI's own section name: metrics it finds later go there, collapsed


@dataclass(frozen=True)
class RunsPage:
    """Where the UI shows the comparison. ``parent_run_id``: the sweep whose children are shown (None:
    all runs of the experiment); ``metrics``: the metric columns, in order."""

    experiment_id: str
    parent_run_id: str | None
    metrics: tuple[str, ...]
    table_url: str
    charts_url: str


def column(kind: str, key: str) -> str:
    """The UI's canonical column key, e.g. metrics.`final_ctr`."""
    return f"{kind}.`{key}`"


def newest_experiment(client: MlflowClient) -> Experiment | None:
    """The experiment of the most recently started run in the store (None when it holds no run)."""
    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return None
    runs = client.search_runs(ids, order_by=["attributes.start_time DESC"], max_results=1)
    return client.get_experiment(runs[0].info.experiment_id) if runs else None


def compared_runs(client: MlflowClient, experiment_id: str) -> tuple[str | None, list[Run]]:
    """(parent run id | None, the runs to compare): the newest run's siblings under its parent, or,
    when the newest run has no parent (a single training run), every run of the experiment."""
    newest = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    parent = newest[0].data.tags.get(PARENT_TAG) if newest else None
    where = f"tags.`{PARENT_TAG}` = '{parent}'" if parent else ""
    return parent, client.search_runs([experiment_id], where, max_results=1000)


def metric_columns(runs: list[Run]) -> tuple[list[str], list[str]]:
    """(metric columns, the runs' other metric keys): ``final_<m>`` of the evaluation metrics the runs
    logged, in EVALUATION_METRICS order; else up to MAX_COLUMNS of their metric keys, sorted."""
    logged = sorted({k for r in runs for k in r.data.metrics})
    shown = [f"final_{m}" for m in EVALUATION_METRICS if f"final_{m}" in logged] or logged[:MAX_COLUMNS]
    return shown, [k for k in logged if k not in shown]


def view_state(parent_run_id: str | None, shown: list[str], other: list[str]) -> dict:
    """The saved view's state: search facets (filter, sort) and UI state (columns, charts)."""
    columns = [column("metrics", m) for m in shown]
    charts = [_bar(m, EVALUATION_SECTION) for m in shown] + [_bar(m, OTHER_SECTION) for m in other]
    state = {
        "searchFilter": f"tags.`{PARENT_TAG}` = '{parent_run_id}'" if parent_run_id else "",
        "selectedColumns": columns,
        "columnOrder": columns,  # the UI sorts metric columns by name otherwise
        "columnWidths": {column("metrics", m): max(140, 7 * len(m) + 24) for m in shown},  # whole names
        "runsHiddenMode": "SHOW_ALL",  # the UI's default charts only the first 10 runs
        "compareRunCharts": charts,
        "compareRunSections": [
            {"uuid": EVALUATION_SECTION, "name": "Evaluation", "display": True, "isReordered": True},
            {"uuid": OTHER_SECTION, "name": OTHER_SECTION, "display": False, "isReordered": False},
        ],
        "isAccordionReordered": True,  # keep "Evaluation" first (the UI sorts sections by name otherwise)
        "hideEmptyCharts": True,
    }
    if shown:
        state.update(orderByKey=column("metrics", shown[0]), orderByAsc=False)
    return state


def _bar(metric: str, section: str) -> dict:
    return {
        "uuid": f"recsys-rl-{metric}",
        "type": "BAR",
        "runsCountToCompare": 100,
        "metricSectionId": section,
        "deleted": False,
        "isGenerated": False,  # a generated chart of a metric logged at a step > 0 is redrawn as a line
        "metricKey": metric,
        "displayName": metric,
    }


def envelope(state: dict, now_ms: int | None = None) -> str:
    """The tag value: the UI's saved-view envelope around the deflated state (tags hold 20,000 chars)."""
    packed = base64.b64encode(zlib.compress(json.dumps(state, separators=(",", ":")).encode())).decode()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return json.dumps({"name": VIEW_NAME, "createdAt": now, "updatedAt": now, "state": f"deflate;{packed}"})


def read_state(value: str) -> dict:
    """Inverse of ``envelope``: the state dict of a saved-view tag value."""
    packed = json.loads(value)["state"].removeprefix("deflate;")
    return json.loads(zlib.decompress(base64.b64decode(packed)))


def page_url(base_url: str, experiment_id: str, mode: str) -> str:
    """The runs page of ``experiment_id`` in Model-training mode, opened on the saved view."""
    query = urlencode(
        {"workflowType": "machine_learning", "viewStateShareKey": SHARE_KEY, "compareRunsMode": mode}
    )
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def publish(tracking_uri: str, base_url: str, experiment: str | None = None) -> RunsPage | None:
    """Write the saved view into ``experiment`` (default: the one with the newest run) of the store at
    ``tracking_uri`` and return its URLs under ``base_url`` (e.g. http://127.0.0.1:5000). None when
    there is nothing to show (no store, no such experiment, or no run at all)."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        return None  # no store yet: nothing to show, and no empty database created on the way
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment) if experiment else newest_experiment(client)
    if exp is None:
        return None
    parent, runs = compared_runs(client, exp.experiment_id)
    shown, other = metric_columns(runs)
    client.set_experiment_tag(exp.experiment_id, VIEW_TAG, envelope(view_state(parent, shown, other)))
    return RunsPage(
        exp.experiment_id,
        parent,
        tuple(shown),
        page_url(base_url, exp.experiment_id, "TABLE"),
        page_url(base_url, exp.experiment_id, "CHART"),
    )
