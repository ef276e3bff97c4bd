"""The registered policy is a standard MLflow model: MLflow's own serve, load and Docker tools work on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
import torch

from recsys_rl import tracking
from recsys_rl.policy import BannerPolicy
from serving.model_holder import RegistrySource
from tests.net import free_port, wait_ready

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A SQLite registry holding banner-policy version 1 (a small random policy), logged as the CLI does."""
    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp}/mlflow.db"
    torch.manual_seed(0)
    policy = BannerPolicy(200, 16, 32).eval()
    tracking.use(uri, "pyfunc-test")
    with mlflow.start_run():
        _, version = tracking.log_policy(policy, "banner-policy", "champion")
    assert str(version) == "1"
    return tmp, uri, policy


def test_pyfunc_load_model_predicts_top5_banners_and_exact_propensities(registry):
    _, uri, policy = registry
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/banner-policy/1")
    ctx = pd.DataFrame({"viewed": [3, 7], "history": [[1, 2, 5], []]})
    out = model.predict(ctx)
    with torch.no_grad():
        logits = policy(torch.tensor([3, 7]), torch.tensor([[1, 2, 5] + [-1] * 7, [-1] * 10]))
    assert out["items"].map(list).tolist() == logits.topk(5).indices.tolist()
    assert out["propensity"].tolist() == [1.0, 1.0]
    sampled = model.predict(ctx, params={"mode": "explore", "seed": 0, "temperature": 1.0})
    from recsys_rl import slate

    items = torch.tensor(sampled["items"].map(list).tolist())
    assert torch.allclose(
        torch.tensor(sampled["log_propensity"].values), slate.log_prob(logits.double(), items)
    )
    with pytest.raises(mlflow.exceptions.MlflowException, match="history\\[0\\]: at most 10"):
        model.predict(pd.DataFrame({"viewed": [1], "history": [list(range(11))]}))
    with pytest.raises(mlflow.exceptions.MlflowException, match="viewed: product id 999"):
        model.predict(pd.DataFrame({"viewed": [999], "history": [[]]}))


def test_banner_service_loads_the_weights_from_the_same_model(registry):
    _, uri, policy = registry
    loaded = RegistrySource("banner-policy", version="1", tracking_uri=uri).load("1")
    viewed, history = torch.tensor([4]), torch.full((1, 10), -1)
    with torch.no_grad():
        assert torch.equal(loaded.logits(viewed, history, None), policy(viewed, history))
    assert loaded.n_products == 200 and loaded.version == "banner-policy/1"


@pytest.fixture(scope="module")
def quickstart_registry(tmp_path_factory):
    """What a new user has after ``recsys-rl quickstart``: its own SQLite store, banner-policy version 1."""
    tmp = tmp_path_factory.mktemp("quickstart")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    r = subprocess.run(
        [
            str(Path(sys.executable).with_name("recsys-rl")),
            "quickstart",
            "--impressions",
            "1024",
            "--quiet",
            "--workdir",
            str(tmp / "work"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "registered version: 1" in r.stdout
    return tmp, f"sqlite:///{tmp}/mlflow.db"


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations_for_the_quickstart_model(quickstart_registry):
    tmp, uri = quickstart_registry
    port = free_port()
    log = tmp / "serve.log"
    # MLflow execs `uvicorn` by name: the venv's bin first, even when pytest runs without activating it
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                MLFLOW,
                "models",
                "serve",
                "-m",
                "models:/banner-policy/1",
                "--env-manager",
                "local",
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}/ping", proc, log.read_text, timeout_s=120)
        body = {
            "dataframe_split": {"columns": ["viewed", "history"], "data": [[1, [2, 3]], [4, []]]},
            "params": {"mode": "explore", "seed": 7},
        }
        r = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=30)
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert len(preds) == 2 and all(len(set(p["items"])) == 5 and p["log_propensity"] < 0 for p in preds)
        bad = {"dataframe_split": {"columns": ["viewed", "history"], "data": [[5000, []]]}}
        r = httpx.post(f"http://127.0.0.1:{port}/invocations", json=bad, timeout=30)
        assert r.status_code == 400 and "viewed: product id 5000" in r.text
    finally:
        proc.terminate()
        proc.wait(30)


def test_generate_dockerfile_writes_a_dockerfile_for_the_model(registry):
    tmp, uri, _ = registry
    out = tmp / "docker"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    r = subprocess.run(
        [MLFLOW, "models", "generate-dockerfile", "-m", "models:/banner-policy/1", "-d", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    dockerfile = (out / "Dockerfile").read_text()
    assert "ENTRYPOINT" in dockerfile and "mlflow" in dockerfile
    assert (out / "model_dir").is_dir()
