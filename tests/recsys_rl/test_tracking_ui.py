"""The saved view `recsys-rl ui` opens, read back from a real MLflow SQLite store: the newest sweep's
children (MLflow's own filter finds exactly them), the evaluation metrics as columns, best graded
reward first, and URLs in Model-training mode."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import mlflow
import pytest
from mlflow import MlflowClient

from recsys_rl import tracking_ui
from recsys_rl.tracking_ui import VIEW_TAG, publish, read_state

BASE = "http://127.0.0.1:5123"


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def _sweep(experiment: str, schemes: dict[str, float]) -> str:
    """A parent run with one child per scheme logging final_reward_graded = value; returns the parent id."""
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="sweep") as parent:
        for name, graded in schemes.items():
            with mlflow.start_run(run_name=name, nested=True):
                mlflow.log_metrics(
                    {"final_reward_graded": graded, "final_ctr": 0.1, "reward_graded": graded}, step=4096
                )
                mlflow.log_metric("final_kl_to_reference", 0.01, step=4096)
    return parent.info.run_id


def _query(url: str) -> tuple[str, dict[str, str]]:
    fragment = urlsplit(url).fragment
    path, _, query = fragment.partition("?")
    return path, {k: v[0] for k, v in parse_qs(query).items()}


def test_publish_opens_the_newest_sweeps_children_with_evaluation_columns(store):
    _sweep("older-sweep", {"ctr": 1.0})
    parent = _sweep("recsys-rl-sweep", {"ctr": 1.9, "graded": 2.1, "revenue": 2.0})
    page = publish(store, BASE)
    exp = MlflowClient(store).get_experiment_by_name("recsys-rl-sweep")
    assert page.experiment_id == exp.experiment_id and page.parent_run_id == parent
    path, query = _query(page.table_url)
    assert page.table_url.startswith(BASE + "/#/")
    assert path == f"/experiments/{exp.experiment_id}/runs"
    assert query == {
        "workflowType": "machine_learning",
        "viewStateShareKey": tracking_ui.SHARE_KEY,
        "compareRunsMode": "TABLE",
    }
    assert _query(page.charts_url)[1]["compareRunsMode"] == "CHART"

    state = read_state(exp.tags[VIEW_TAG])
    shown = MlflowClient(store).search_runs([exp.experiment_id], state["searchFilter"])
    assert sorted(r.info.run_name for r in shown) == ["ctr", "graded", "revenue"]
    # evaluation metrics in their fixed order (not by name), the headline one first and sorted on
    assert page.metrics == ("final_reward_graded", "final_ctr", "final_kl_to_reference")
    assert state["selectedColumns"] == state["columnOrder"] == [f"metrics.`{m}`" for m in page.metrics]
    assert state["orderByKey"] == "metrics.`final_reward_graded`" and state["orderByAsc"] is False
    bars = [c for c in state["compareRunCharts"] if c["metricSectionId"] == "evaluation"]
    assert [c["metricKey"] for c in bars] == list(page.metrics) and {c["type"] for c in bars} == {"BAR"}
    others = [c["metricKey"] for c in state["compareRunCharts"] if c["metricSectionId"] != "evaluation"]
    assert others == ["reward_graded"]


def test_a_second_publish_follows_the_newer_sweep_in_the_same_experiment(store):
    _sweep("recsys-rl-sweep", {"ctr": 1.0})
    newer = _sweep("recsys-rl-sweep", {"graded": 2.0, "purchase": 1.5})
    publish(store, BASE)
    page = publish(store, BASE)
    exp = MlflowClient(store).get_experiment(page.experiment_id)
    state = read_state(exp.tags[VIEW_TAG])
    runs = MlflowClient(store).search_runs([page.experiment_id], state["searchFilter"])
    assert page.parent_run_id == newer
    assert sorted(r.info.run_name for r in runs) == ["graded", "purchase"]


def test_an_experiment_of_single_runs_shows_all_of_them(store):
    mlflow.set_experiment("recsys-rl")
    for name in ("quickstart-graded", "ctr-seed0"):
        with mlflow.start_run(run_name=name):
            mlflow.log_metric("final_reward_graded", 1.0)
    page = publish(store, BASE, "recsys-rl")
    state = read_state(MlflowClient(store).get_experiment(page.experiment_id).tags[VIEW_TAG])
    assert page.parent_run_id is None and state["searchFilter"] == ""
    assert len(MlflowClient(store).search_runs([page.experiment_id], state["searchFilter"])) == 2


def test_runs_without_the_evaluation_metrics_show_their_own(store):
    mlflow.set_experiment("recsys-rl-kl-sweep")
    with mlflow.start_run():
        with mlflow.start_run(nested=True):
            mlflow.log_metrics({"gold": 1.0, "proxy": 2.0, "sqrt_kl": 0.5})
    page = publish(store, BASE)
    assert page.metrics == ("gold", "proxy", "sqrt_kl")


def test_many_metrics_still_fit_in_one_experiment_tag(store):
    mlflow.set_experiment("wide")
    with mlflow.start_run():
        with mlflow.start_run(nested=True):
            mlflow.log_metrics({f"some_rather_long_metric_name_{i:03d}": float(i) for i in range(400)})
    page = publish(store, BASE)
    value = MlflowClient(store).get_experiment(page.experiment_id).tags[VIEW_TAG]
    assert len(read_state(value)["compareRunCharts"]) == 400


def test_nothing_to_show_gives_none(store, tmp_path):
    assert publish(f"sqlite:///{tmp_path}/absent.db", BASE) is None
    assert not (tmp_path / "absent.db").exists()
    MlflowClient(store).search_experiments()  # creates the store's tables
    assert publish(store, BASE) is None  # an empty store
    assert publish(store, BASE, "no-such-experiment") is None


def test_ui_with_an_unknown_experiment_is_one_line_on_stderr(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "recsys_rl", "ui", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
        + ["--experiment", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    uri = f"sqlite:///{tmp_path}/m.db"
    assert r.stderr.strip().splitlines() == [f"error: --experiment: no experiment named 'nope' in {uri}"]
