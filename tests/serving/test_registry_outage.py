"""Serving while the MLflow registry is down (a real MLflow server, SIGKILLed and restarted): the
current version keeps serving, /readyz says the registry is stale and since when, /metrics counts
the failed polls, and the next good poll clears it."""

from __future__ import annotations

import time

import httpx
import mlflow
import pytest

from benchmarks._services import MlflowServer
from recsys_rl.tracking import log_policy
from serving.app import create_app
from serving.model_holder import ModelHolder, RegistrySource
from tests.serving.helpers import config, running_server, tiny_policy

pytestmark = pytest.mark.slow


def wait_for(fn, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not (out := fn()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)
    return out


def test_an_unreachable_registry_keeps_the_current_version_and_is_reported_stale(tmp_path, store):
    with MlflowServer(tmp_path / "mlflow") as server:
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(server.url)
        mlflow.set_experiment("registry-outage")  # not an experiment id cached from another store
        try:
            log_policy(tiny_policy(1), "outage-policy", "champion")
        finally:
            mlflow.set_tracking_uri(previous)
        source = RegistrySource("outage-policy", alias="champion", tracking_uri=server.url)
        holder = ModelHolder(source, reload_interval_s=0.2)
        app = create_app(config(tmp_path), store=store, holder=holder)
        with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
            wait_for(lambda: http.get("/readyz").status_code == 200)
            assert http.get("/readyz").json()["registry"]["status"] == "fresh"
            server.kill()
            stale = wait_for(
                lambda: (r := http.get("/readyz").json()).get("registry", {}).get("status") == "stale" and r
            )
            assert (
                stale["status"] == "ready" and stale["registry"]["since"] and stale["registry"]["last_error"]
            )
            banner = http.post("/v1/banners", json={"user_id": 1, "viewed": 2})
            assert banner.status_code == 200 and banner.json()["model_version"] == "outage-policy/1"
            metrics = http.get("/metrics").text
            failures = [
                line
                for line in metrics.splitlines()
                if line.startswith("recsys_registry_poll_failures_total")
            ]
            assert failures and float(failures[0].split()[1]) >= 1
            assert "recsys_registry_stale_since_seconds 0.0" not in metrics
            server.start()
            wait_for(lambda: http.get("/readyz").json()["registry"]["status"] == "fresh", 60)
            assert "recsys_registry_stale_since_seconds 0.0" in http.get("/metrics").text
