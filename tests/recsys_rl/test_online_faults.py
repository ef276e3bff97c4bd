"""The online trainer against a real MLflow server that is SIGKILLed and restarted: it keeps training
and checkpointing, and registers the version that passed its guard rails once MLflow is back, exactly
once (a lost reply does not make a second version)."""

from __future__ import annotations

import time

import mlflow
import pytest

from benchmarks._services import MlflowServer
from recsys_rl.events import open_store
from recsys_rl.online import OnlineTrainer
from recsys_rl.registration import TAG
from tests.recsys_rl.test_online import T0, config, reference, serve_traffic  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


def test_mlflow_down_keeps_training_and_registers_the_pending_version_once_when_back(tmp_path, reference):  # noqa: F811
    store = open_store(f"sqlite:///{tmp_path}/events.db")
    serve_traffic(store, reference, 1500, seed=4)
    cfg = config(tmp_path, register_every=1, value_tolerance=10.0, retry_s=0.2, retry_max_s=0.5)
    name = cfg.tracking.registered_model
    with MlflowServer(tmp_path / "mlflow") as server:
        mlflow.set_tracking_uri(server.url)
        mlflow.set_experiment("online-faults")  # not an experiment id cached from another store
        logs: list[str] = []
        t = OnlineTrainer(cfg, store, reference, clock=time.time, log=logs.append)
        t.clock = lambda: T0 + 1000 + time.monotonic()
        server.kill()
        assert t.step()["registered"] == 0.0  # trained and checkpointed; the registration is pending
        assert t.pending is not None and t.updates == 1
        assert t.step() is not None and t.updates == 2  # training goes on while MLflow is down
        assert store.committed(cfg.online.consumer) is not None
        assert any("registration of" in line and "failed" in line for line in logs)

        resumed = OnlineTrainer(cfg, store, reference, clock=t.clock, log=logs.append)
        assert resumed.pending is not None and resumed.pending[0] == t.pending[0]  # in the checkpoint

        server.start()
        deadline = time.monotonic() + 120  # a loaded machine: the restarted server answers slowly
        while resumed.pending is not None and time.monotonic() < deadline:
            resumed.retry_registration()
            time.sleep(0.1)
        assert resumed.pending is None and len(resumed.registered) == 1
        # a retry of the same key (as after a lost reply) finds the version instead of making another
        resumed.pending = (t.pending[0], t.pending[1])
        resumed._register_at = 0.0
        assert resumed.retry_registration()
        client = mlflow.MlflowClient(server.url)
        versions = client.search_model_versions(f"name='{name}'")
        assert len(versions) == 1 and versions[0].tags[TAG] == t.pending[0]
        assert client.get_model_version_by_alias(name, "champion").version == versions[0].version
    store.close()
