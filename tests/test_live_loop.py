"""The whole live loop on one machine, as separate processes talking over loopback and a real store:

server (SQLite event store, model from the MLflow registry by alias) <- drive (simulated users over
HTTP) -> online trainer (consumes the stream, registers guard-railed versions) -> server hot-swaps.
"""

import re
import subprocess
import sys

import httpx
import mlflow
import pytest
import torch
import yaml

from recsys_rl import tracking
from recsys_rl.baseline import train_baseline
from recsys_rl.config import TrackingConfig, load_reward
from recsys_rl.evaluation import greedy_banners, make_eval_set
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.policy import save_policy
from recsys_rl.rewards import expected_reward
from tests.net import free_port, wait_ready
from tests.recsys_rl.helpers import BASELINE, POLICY, SMALL, small_logs_dir, small_sim

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "recsys_rl"]


def exact_value(logits_fn, es, scheme) -> float:
    sim = small_sim()
    return (
        expected_reward(scheme, sim.expected(es.users, greedy_banners(logits_fn, es.contexts))).mean().item()
    )


def impressions_at_first_registration(trainer_log: str) -> int | None:
    """Impressions the trainer had consumed at the update whose version was registered first."""
    m = re.search(r"registered version \S+ \([^:]+:(\d+)\)", trainer_log)
    if m is None:
        return None
    found = re.search(rf"^update {m.group(1)}: impressions=(\d+)", trainer_log, re.M)
    return int(found.group(1)) if found else None


def test_served_policy_improves_through_the_live_loop(tmp_path):
    db = f"sqlite:///{tmp_path}/mlflow.db"
    events = f"sqlite:///{tmp_path}/events.db"
    logs_dir = small_logs_dir(str(tmp_path))
    ref = train_baseline(read_logs(logs_dir), SMALL.n_products, POLICY, BASELINE, 0, False)
    save_policy(ref, tmp_path / "ref.pt")
    tracking.setup(TrackingConfig(tracking_uri=db, experiment="live"))
    with mlflow.start_run(run_name="reference"):
        tracking.log_policy(ref, "banner-policy", alias="champion")  # version 1 = the reference

    (tmp_path / "sim.yaml").write_text(yaml.safe_dump(SMALL.model_dump()))
    run_cfg = {
        "seed": 0,
        "reward": "graded",
        "sim": SMALL.model_dump(),
        "policy": POLICY.model_dump(),
        "train": {
            "lr": 3e-3,
            "epochs": 4,
            "minibatch_size": 500,
            "kl_hard_limit": 10.0,
            "eval_users": 8192,
            "replay_batches": 2,
        },
        "warm_start": {"enabled": True},  # from the logs that trained the reference, before live traffic
        "tracking": {"tracking_uri": db, "experiment": "live"},
        "online": {
            "attribution_window_s": 1.0,
            "batch_size": 1000,
            "min_batch": 500,
            "register_every": 10,
            "poll_s": 0.2,
            "checkpoint_dir": str(tmp_path / "ckpt"),
            "min_value_gain": 0.01,
        },
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run_cfg))
    port = free_port()
    serve_cfg = {
        "model_uri": "models:/banner-policy@champion",
        "tracking_uri": db,
        "events": events,
        "reload_interval_s": 1.0,
        "port": port,
        "seed": 0,
    }
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(serve_cfg))
    url = f"http://127.0.0.1:{port}"

    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("server", "trainer")}
    server = subprocess.Popen(
        [*CLI, "serve", "--config", str(tmp_path / "serve.yaml")],
        cwd=tmp_path,
        stdout=logs["server"],
        stderr=subprocess.STDOUT,
    )
    trainer = subprocess.Popen(
        [
            *CLI,
            "train-online",
            "--events",
            events,
            "--reference",
            str(tmp_path / "ref.pt"),
            "--config",
            str(tmp_path / "run.yaml"),
            "--sim-config",
            str(tmp_path / "sim.yaml"),
            "--idle-exit",
            "120",
            "--logs",
            str(logs_dir),
        ],
        cwd=tmp_path,
        stdout=logs["trainer"],
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(f"{url}/readyz", server, (tmp_path / "server.log").read_text)
        served = "1"
        client = mlflow.MlflowClient(db)
        for round_ in range(12):
            r = subprocess.run(
                [
                    *CLI,
                    "drive",
                    "--url",
                    url,
                    "--users",
                    "3000",
                    "--seed",
                    str(round_),
                    "--sim-config",
                    str(tmp_path / "sim.yaml"),
                ],
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert r.returncode == 0, r.stdout + r.stderr
            assert trainer.poll() is None, (tmp_path / "trainer.log").read_text()[-3000:]
            champion = client.get_model_version_by_alias("banner-policy", "champion").version
            served = str(httpx.get(f"{url}/readyz", timeout=5).json().get("model_version", served)).split(
                "/"
            )[-1]
            if str(champion) != "1" and str(served) == str(champion):
                break
        assert str(champion) != "1", (
            "no new version registered:\n" + (tmp_path / "trainer.log").read_text()[-3000:]
        )
        assert str(served) == str(champion), f"server still serves {served}, registry champion is {champion}"
        banner = httpx.post(f"{url}/v1/banners", json={"user_id": 1, "viewed": 3, "history": [4, 5]}).json()
        assert str(banner["model_version"]).split("/")[-1] == str(champion)
    finally:
        for p in (server, trainer):
            p.terminate()
            p.wait(timeout=30)

    scheme = load_reward("graded")
    es = make_eval_set(small_sim(), 16384, seed=123)  # other users than the guard's: a fresh judgement
    mlflow.set_tracking_uri(db)
    new = tracking.load_logits_model(f"models:/banner-policy/{champion}")
    with torch.no_grad():
        new_value = exact_value(lambda c: new(c.viewed, c.history), es, scheme)
    ref_value = exact_value(ref.logits, es, scheme)
    first = impressions_at_first_registration((tmp_path / "trainer.log").read_text())
    print(
        f"live loop: version {champion} value {new_value:.4f} vs reference {ref_value:.4f}; "
        f"first version registered after {first} impressions"
    )
    # warm-started from the logs, the trainer checks (and here registers) that version at its first live
    # update: one batch (<= online.batch_size impressions), where the cold trainer needed 5,000-15,000
    assert first is not None and first <= 2 * run_cfg["online"]["batch_size"], first
    assert new_value > ref_value
