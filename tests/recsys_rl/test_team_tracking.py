"""A team MLflow tracking server backed by the real PostgreSQL: runs and models land there."""

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import mlflow
import pytest
import torch

from recsys_rl.baseline import train_baseline
from recsys_rl.config import RunConfig, TrackingConfig
from recsys_rl.jobs.train import train_job
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.tracking import load_logits_model
from tests.net import free_port, wait_ready
from tests.recsys_rl.helpers import BASELINE, POLICY, SMALL, small_logs_dir, small_sim, small_train

PG = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c"]


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    db = f"recsys_rl_test_{uuid.uuid4().hex[:8]}"
    subprocess.run([*PG, f"CREATE DATABASE {db}"], check=True, capture_output=True)
    root, port = tmp_path_factory.mktemp("team"), free_port()
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    cmd = [
        exe,
        "server",
        "--backend-store-uri",
        f"postgresql://postgres@127.0.0.1:5432/{db}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(cmd, env=env, stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{uri}/health", proc, (root / "server.log").read_text)
        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        subprocess.run([*PG, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], capture_output=True)


def test_training_job_tracks_to_the_team_server(team_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_server)  # the env wins over the config's sqlite default
    cfg = RunConfig(
        sim=SMALL,
        policy=POLICY,
        baseline=BASELINE,
        train=small_train(total_impressions=10_240),
        tracking=TrackingConfig(experiment="team"),
    )
    ref = train_baseline(
        read_logs(small_logs_dir(str(tmp_path))), SMALL.n_products, POLICY, BASELINE, 0, False
    )
    res = train_job(cfg, small_sim(), reference=ref, progress=False)
    client = mlflow.MlflowClient(team_server)
    run = client.get_run(res.run_id)
    assert run.data.tags["reward_scheme"] == "graded"
    assert "oracle_gap_closed" in run.data.metrics
    assert "learning_curves.png" in {a.path for a in client.list_artifacts(res.run_id)}
    mlflow.set_tracking_uri(team_server)
    model = load_logits_model(f"models:/banner-policy/{res.model_version}")
    ctx = small_sim().contexts(torch.arange(8), torch.Generator().manual_seed(0))
    assert torch.equal(model(ctx.viewed, ctx.history).topk(5).indices, res.policy.greedy(ctx))
