"""What the MLflow UI builds a sweep's page from, read back through a real ``mlflow server``'s REST API:
the experiment-kind tag (runs view, not GenAI traces), one parent run with a nested child per scheme,
the comparison chart and table on the parent, and headline metrics on every child."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
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


@pytest.mark.slow
def test_sweep_is_a_parent_with_nested_children_in_a_runs_view_experiment(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    r = subprocess.run(
        [*CLI, "sweep", "--rewards", "ctr,graded", "--quiet", "--workdir", str(tmp_path / "w"), *SMALL],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
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
