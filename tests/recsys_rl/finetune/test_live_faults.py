"""The online trainer against real services that are SIGKILLed and restarted.

MLflow: it keeps training and checkpointing, and registers the version that passed its guard rails once
MLflow is back, exactly once (a lost reply does not make a second version). Redis (its own AOF
``appendfsync always`` server): it waits, and resumes from its committed offset when Redis returns —
even when Redis died between the checkpoint and the commit — so every impression is trained on once."""

from __future__ import annotations

import threading
import time

import mlflow
import pytest

from benchmarks._services import MlflowServer, RedisServer
from recsys_rl.events import StoreUnavailable, open_store
from recsys_rl.finetune.live import OnlineTrainer
from recsys_rl.registration import TAG
from tests.recsys_rl.finetune.test_live import T0, config, reference, serve_traffic  # noqa: F401 - fixture

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

        key = t.pending[0]
        server.start()
        deadline = time.monotonic() + 120  # a loaded machine: the restarted server answers slowly
        while t.pending is not None and time.monotonic() < deadline:
            t.retry_registration()  # the trainer whose tries failed: its backoff must let it retry
            time.sleep(0.1)
        assert t.pending is None and len(t.registered) == 1
        # the restarted trainer still holds the same key (as after a reply lost in the outage): its
        # retry finds the version instead of making another
        assert resumed.retry_registration() and resumed.pending is None
        client = mlflow.MlflowClient(server.url)
        versions = client.search_model_versions(f"name='{name}'")
        assert len(versions) == 1 and versions[0].tags[TAG] == key
        assert client.get_model_version_by_alias(name, "champion").version == versions[0].version
    store.close()


def test_redis_down_the_trainer_waits_and_resumes_from_its_committed_offset(tmp_path, reference):  # noqa: F811
    with RedisServer(tmp_path / "redis") as server:
        store = open_store(f"{server.url}?prefix=t")
        try:
            serve_traffic(store, reference, 1500, seed=5)
            logs: list[str] = []
            cfg = config(tmp_path, retry_s=0.05, retry_max_s=0.2)
            t = OnlineTrainer(cfg, store, reference, clock=lambda: T0 + 1000, log=logs.append)
            assert t.step() is not None and t.impressions == 500

            real_commit = store.commit

            def redis_dies_before_the_commit(*args):
                server.kill()  # a real SIGKILL, after the checkpoint of batch 2, before its commit
                return real_commit(*args)

            store.commit = redis_dies_before_the_commit
            assert t.step() is not None and t.impressions == 1000  # trained and checkpointed
            store.commit = real_commit
            with pytest.raises(StoreUnavailable):
                t.step()  # the uncommitted offset cannot be committed while Redis is down

            loop = threading.Thread(target=t.run, kwargs={"max_updates": 1}, daemon=True)
            loop.start()
            time.sleep(1.0)
            assert loop.is_alive() and t.updates == 2  # waiting, not dead and not training
            server.start()  # same port and directory: the AOF is read back
            loop.join(60)
            assert not loop.is_alive()
            assert t.updates == 3 and t.impressions == 1500  # batch 2 did not come back
            assert t.step() is None  # nothing left: no impression is trained on twice or skipped
            assert any("event store unavailable" in line for line in logs)
            assert any("event store back" in line for line in logs)
        finally:
            store.close()
