"""The reward-model path from a table in another layout: `train-reward-model --mapping` then
`train --logs --mapping --reward-model`, the catalogue taken from the logs throughout."""

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from recsys_rl.cli.main import app
from recsys_rl.config import SimConfig
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.records import catalogue_size
from recsys_rl.reward_model import load_reward_model
from simulator import Simulator
from simulator.logged import generate_logs

ITEMS = [f"item_{k}" for k in range(5)]
CLICKS = [f"click_{k}" for k in range(5)]


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _flat_table(tmp_path):
    """A clicks-only CSV, one row per banner, and the mapping YAML that describes it."""
    sim = Simulator(SimConfig(n_products=30, n_categories=3, n_users=200, consideration_size=12))
    logged = read_logs(generate_logs(sim, 2000, tmp_path / "logs", seed=0, progress=False))
    df = pd.DataFrame({"viewed": logged.contexts.viewed.numpy()})
    for k in range(5):
        df[ITEMS[k]] = logged.banners.items[:, k].numpy()
        df[CLICKS[k]] = logged.outcomes.clicks[:, k].int().numpy()
    df["prop"] = np.exp(logged.banners.log_prob.double().numpy())
    df.to_csv(tmp_path / "flat.csv", index=False)
    mapping = {"viewed": "viewed", "items": ITEMS, "clicks": CLICKS, "propensity": "prop"}
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(mapping))
    return tmp_path / "flat.csv", tmp_path / "map.yaml", logged


def test_a_mapped_table_trains_a_reward_model_and_a_policy_against_it(tmp_path):
    data, mapping, logged = _flat_table(tmp_path)
    (tmp_path / "cfg.yaml").write_text(
        f"tracking:\n  tracking_uri: sqlite:///{tmp_path}/mlflow.db\ntrain:\n  total_impressions: 4096\n"
        "  contexts_per_batch: 128\n  eval_users: 256\nbaseline:\n  epochs: 1\n"
    )
    common = [
        "--logs",
        str(data),
        "--mapping",
        str(mapping),
        "--config",
        str(tmp_path / "cfg.yaml"),
        "--quiet",
    ]
    r = CliRunner().invoke(app, ["train-reward-model", *common, "--set", "epochs=2"])
    assert r.exit_code == 0, r.output
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    # the catalogue is the one the table implies, not the default simulator preset's 1,000 products
    assert load_reward_model("models:/banner-reward-model/1").n_products == catalogue_size(logged) <= 30

    r = CliRunner().invoke(
        app, ["train", *common, "--reward-model", "models:/banner-reward-model/1", "--reward", "ctr"]
    )
    assert r.exit_code == 0, r.output
    assert "fine-tuning against the reward model" in r.output
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.job = 'train_reward_model_rl'"
    )
    assert len(runs) == 1 and runs[0].data.tags["data_source"] == f"logs:{data}"
