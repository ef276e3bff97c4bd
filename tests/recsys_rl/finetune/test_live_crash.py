"""The online trainer process killed with SIGKILL mid-run: the restart neither skips nor repeats events,
and every registered model version is complete and loadable."""

import signal
import subprocess
import sys
import time

import mlflow
import pytest
import torch
import yaml

from recsys_rl import tracking
from recsys_rl.events import open_store
from recsys_rl.finetune.live import CHECKPOINT
from recsys_rl.policy import save_policy
from tests.recsys_rl.finetune.test_live import reference, serve_traffic  # noqa: F401 - the module fixture
from tests.recsys_rl.helpers import POLICY, SMALL

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "recsys_rl"]


def test_sigkill_mid_run_then_restart_consumes_every_event_once(tmp_path, reference):  # noqa: F811
    events = f"sqlite:///{tmp_path}/events.db"
    with open_store(events) as store:
        serve_traffic(store, reference, 6000, seed=11, t0=1_000_000_000.0)  # long past any window
    save_policy(reference, tmp_path / "ref.pt")
    db = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = {
        "sim": SMALL.model_dump(),
        "policy": POLICY.model_dump(),
        "train": {"epochs": 1, "minibatch_size": 500, "kl_hard_limit": 10.0},
        "tracking": {"tracking_uri": db, "experiment": "crash"},
        "online": {
            "attribution_window_s": 1.0,
            "batch_size": 500,
            "min_batch": 100,
            "register_every": 2,
            "value_tolerance": 10.0,
            "poll_s": 0.2,
            "checkpoint_dir": str(tmp_path / "ckpt"),
        },
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [
        *CLI,
        "train-online",
        "--events",
        events,
        "--reference",
        str(tmp_path / "ref.pt"),
        "--config",
        str(tmp_path / "run.yaml"),
        "--idle-exit",
        "3",
    ]

    log = tmp_path / "first.log"
    first = subprocess.Popen(cmd, cwd=tmp_path, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while "update 5:" not in log.read_text():
        assert first.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # mid-run: between, or inside, updates
    first.wait(timeout=30)

    second = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    state = torch.load(tmp_path / "ckpt" / CHECKPOINT, weights_only=True)
    assert state["impressions"] == 6000  # every event trained on exactly once across the kill
    assert state["updates"] == 12
    with open_store(events) as store:
        assert len(store.read_ready("online-trainer", 2e9, 10_000)) == 0  # nothing left, nothing re-offered

    client = mlflow.MlflowClient(db)
    versions = client.search_model_versions("name='banner-policy'")
    assert versions and all(v.status == "READY" for v in versions)
    mlflow.set_tracking_uri(db)
    for v in versions:
        model = tracking.load_logits_model(f"models:/banner-policy/{v.version}")
        assert model(torch.tensor([1, 2]), torch.full((2, 10), -1)).shape == (2, SMALL.n_products)
