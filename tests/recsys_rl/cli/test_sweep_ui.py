"""A sweep as a user meets it in the MLflow UI.

Read back through a real ``mlflow server``'s REST API: the experiment-kind tag, one parent run with a
nested child per scheme, the comparison chart and table on the parent, headline metrics on every child.
Read from the page headless Chromium renders: ``recsys-rl ui`` prints a URL whose page shows the
schemes' runs with the evaluation metrics as columns, in Model-training mode, not the GenAI overview.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow
import pytest

from tests.net import free_port, wait_ready

CLI = [sys.executable, "-m", "recsys_rl"]
SMALL = [
    "--set",
    "train.total_impressions=4096",
    "--set",
    "baseline.logged_impressions=5000",
    "--set",
    "baseline.epochs=1",
    "--set",
    "train.eval_users=512",
    "--set",
    "tracking.log_model=false",
]


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, str]:
    """(directory, tracking URI) of a store holding one small real sweep over ctr and graded."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    r = subprocess.run(
        [*CLI, "sweep", "--rewards", "ctr,graded", "--quiet", "--workdir", str(tmp_path / "w"), *SMALL],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp_path, uri


@pytest.mark.slow
def test_sweep_is_a_parent_with_nested_children_in_a_runs_view_experiment(swept):
    tmp_path, uri = swept
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("mlflow")),
                "server",
                "--backend-store-uri",
                uri,
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/health", server, log.read_text, timeout_s=120)
        api = f"{base}/api/2.0/mlflow"
        exp = httpx.get(
            f"{api}/experiments/get-by-name", params={"experiment_name": "recsys-rl-sweep"}
        ).json()
        exp = exp["experiment"]
        assert {t["key"]: t["value"] for t in exp.get("tags", [])}["mlflow.experimentKind"] == (
            "custom_model_development"
        )
        runs = httpx.post(f"{api}/runs/search", json={"experiment_ids": [exp["experiment_id"]]}).json()[
            "runs"
        ]
        tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs}
        parents = [rid for rid, t in tags.items() if "mlflow.parentRunId" not in t]
        assert len(parents) == 1 and len(runs) == 3
        children = [r for r in runs if tags[r["info"]["run_id"]].get("mlflow.parentRunId") == parents[0]]
        assert sorted(r["info"]["run_name"] for r in children) == ["ctr", "graded"]
        for child in children:
            metrics = {m["key"] for m in child["data"]["metrics"]}
            assert {
                "final_ctr",
                "final_reward_graded",
                "final_kl_to_reference",
                "final_oracle_gap_closed",
            } <= metrics
        files = httpx.get(f"{api}/artifacts/list", params={"run_id": parents[0]}).json()["files"]
        assert {"sweep_comparison.png", "sweep_comparison.csv", "sweep_comparison.json"} <= {
            f["path"] for f in files
        }
    finally:
        server.terminate()
        server.wait(30)


# What only the GenAI overview shows (its usage charts), as the page reads without Model-training mode.
GENAI_OVERVIEW = ("Token Usage", "Tokens per Trace", "Cost Over Time")
RUN_LINK = re.compile(r'href="#/experiments/\d+/runs/[0-9a-f]{32}"><span[^>]*>([^<]+)</span>')


def rendered(url: str, profile: Path) -> str:
    """The DOM headless Chromium builds for ``url`` (a fresh profile: nothing remembered from before).
    The window is wide enough that the grid renders every metric column (it virtualises the rest)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    r = subprocess.run(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"]
        + ["--window-size=3840,1400", "--virtual-time-budget=30000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.slow
@pytest.mark.chromium
@pytest.mark.skipif(
    not (shutil.which("chromium") or shutil.which("chromium-browser")),
    reason="needs chromium (apt-get install chromium)",
)
def test_recsys_rl_ui_opens_on_the_schemes_side_by_side(swept, tmp_path):
    store, uri = swept
    port = free_port()
    log = tmp_path / "ui.log"
    with open(
        log, "wb"
    ) as out:  # its own session: `recsys-rl ui` and the `mlflow ui` it starts stop together
        ui = subprocess.Popen(
            [*CLI, "ui", "--tracking-uri", uri, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=store,
            start_new_session=True,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", ui, log.read_text, timeout_s=120)
        urls = dict(re.findall(r"compare runs \((table|charts)\):\s+(\S+)", log.read_text()))
        assert set(urls) == {"table", "charts"}, log.read_text()[-3000:]
        page = rendered(urls["table"], tmp_path / "profile")

        children = mlflow.MlflowClient(uri).search_runs(
            [mlflow.MlflowClient(uri).get_experiment_by_name("recsys-rl-sweep").experiment_id],
            "tags.`mlflow.parentRunId` != ''",
        )
        assert sorted(RUN_LINK.findall(page)) == ["ctr", "graded"]  # the schemes, not the parent
        for metric in (
            "final_reward_graded",
            "final_reward_ctr",
            "final_reward_purchase",
            "final_reward_revenue",
            "final_ctr",
            "final_kl_to_reference",
            "final_oracle_gap_closed",
        ):
            assert f'col-id="metrics.`{metric}`"' in page, metric
        for run in children:  # the values themselves, as MLflow stored them
            assert f">{run.data.metrics['final_reward_graded']!r}<" in page
        assert not [text for text in GENAI_OVERVIEW if text in page]

        charts = rendered(urls["charts"], tmp_path / "profile-charts")
        assert "final_reward_graded" in charts and not [t for t in GENAI_OVERVIEW if t in charts]
        # the same experiment without the printed URL's parameters: MLflow's GenAI overview
        plain = rendered(urls["table"].split("/runs?")[0], tmp_path / "profile-plain")
        assert all(text in plain for text in GENAI_OVERVIEW)
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(30)
