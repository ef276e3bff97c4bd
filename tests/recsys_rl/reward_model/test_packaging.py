import mlflow
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recsys_rl.config import TrackingConfig
from recsys_rl.policy import BannerPolicy, save_policy
from recsys_rl.reward_model import REGISTERED_NAME, check_catalogue, load_reward_model
from recsys_rl.reward_model.packaging import input_example, log_reward_model
from recsys_rl.tracking import setup
from simulator import Simulator
from simulator.logged import generate_logs
from tests.recsys_rl.reward_model.helpers import TINY, known_model


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_registered_reward_model_loads_with_mlflows_own_pyfunc_api(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    setup(TrackingConfig(tracking_uri=uri), "rm")
    model = known_model(TINY.n_products, torch.linspace(-1, 1, TINY.n_products))
    with mlflow.start_run():
        _, version = log_reward_model(model)
    loaded = mlflow.pyfunc.load_model(f"models:/{REGISTERED_NAME}/{version}")
    x = input_example(model)
    out = loaded.predict(x)
    from recsys_rl.records import HISTORY_LEN, PAD, ContextBatch

    history = torch.full((2, HISTORY_LEN), PAD)
    history[:, 0] = torch.as_tensor([h[0] for h in x["history"]])
    want = model.expected(
        ContextBatch(torch.tensor(x["viewed"].tolist()), history), torch.as_tensor(list(x["items"]))
    )
    for name in ("click", "purchase", "multi", "units", "revenue"):
        np.testing.assert_allclose(np.stack(out[name]), getattr(want, name).numpy(), rtol=1e-6)
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"items\[0\]: expected 5 products, got 2"):
        loaded.predict(x.assign(items=[[0, 1], [1, 0]]))
    torch_model = load_reward_model(f"models:/{REGISTERED_NAME}/{version}")
    assert torch_model.n_products == TINY.n_products


def test_a_reward_model_of_another_catalogue_is_refused():
    model = known_model(30, torch.zeros(30))
    with pytest.raises(
        ValueError, match="scores 30 products, but the reference policy has 24; .*another catalogue"
    ):
        check_catalogue(model, 24, "the reference policy")


def _app():
    from recsys_rl.cli.main import app

    return app


def test_cli_trains_registers_and_refuses_another_catalogue(tmp_path):
    sim = Simulator(TINY)
    logs = generate_logs(sim, 3000, tmp_path / "logs", seed=0, progress=False)
    (tmp_path / "cfg.yaml").write_text(
        f"tracking:\n  tracking_uri: sqlite:///{tmp_path}/mlflow.db\ntrain:\n  total_impressions: 4096\n"
        "  contexts_per_batch: 128\n  eval_users: 256\n"
    )
    base = ["--config", str(tmp_path / "cfg.yaml")]
    r = CliRunner().invoke(
        _app(),
        [
            "train-reward-model",
            "--logs",
            str(logs),
            "--n-products",
            "24",
            *base,
            "--set",
            "epochs=3",
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "registered: banner-reward-model version 1" in " ".join(r.output.split())
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("recsys-rl-reward-model").experiment_id])[0]
    assert {"auc_click", "ece_click", "log_loss_purchase", "ece_multi"} <= set(run.data.metrics)
    assert "reliability.png" in [a.path for a in client.list_artifacts(run.info.run_id)]

    other = BannerPolicy(40, embed_dim=4, hidden_dim=8)
    save_policy(other, tmp_path / "other.pt")
    r = CliRunner().invoke(
        _app(),
        [
            "train",
            "--logs",
            str(logs),
            "--reward-model",
            "models:/banner-reward-model/1",
            "--reference",
            str(tmp_path / "other.pt"),
            *base,
            "--quiet",
        ],
    )
    assert r.exit_code == 2
    assert (
        "error: --reward-model: the reward model scores 24 products, but the --reference policy has 40"
        in r.output
    )

    r = CliRunner().invoke(_app(), ["train-reward-model", "--logs", str(logs), "--n-products", "10", *base])
    assert r.exit_code == 2 and "error:" in r.output and "10" in r.output
    r = CliRunner().invoke(
        _app(), ["train-reward-model", "--logs", str(logs), "--n-products", "24", *base, "--set", "epochs=0"]
    )
    assert r.exit_code == 2 and "error: --set: epochs:" in r.output

    r = CliRunner().invoke(
        _app(),
        [
            "train",
            "--logs",
            str(logs),
            "--reward-model",
            "models:/banner-reward-model/1",
            *base,
            "--quiet",
            "--set",
            "baseline.epochs=1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "best-of-16" in r.output and "proxy_value" in r.output

    r = CliRunner().invoke(
        _app(),
        [
            "sweep",
            "--reward-model",
            "models:/banner-reward-model/1",
            "--logs",
            str(logs),
            "--kl-targets",
            "0.1,0.2",
            *base,
            "--quiet",
            "--set",
            "baseline.epochs=1",
        ],
    )
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "gold (doubly robust on held-out logs)" in out and "recommended kl_target" in out
    r = CliRunner().invoke(
        _app(),
        [
            "sweep",
            "--reward-model",
            "models:/banner-reward-model/1",
            "--logs",
            str(logs),
            "--kl-targets",
            "0.5,-1",
            *base,
        ],
    )
    assert r.exit_code == 2 and "error: --kl-targets: budgets must be positive" in r.output

    # a budget beyond reach is continued (--reach-rounds) and the options reach the sweep's MLflow run
    r = CliRunner().invoke(
        _app(),
        [
            "sweep",
            "--reward-model",
            "models:/banner-reward-model/1",
            "--logs",
            str(logs),
            "--kl-targets",
            "0.1,8",
            "--reach-rounds",
            "2",
            "--max-kl",
            "20",
            *base,
            "--quiet",
            "--set",
            "baseline.epochs=1",
            "--experiment",
            "reach",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "kl_target=8: KL" in r.output and "continuing" in r.output
    parent = client.search_runs(
        [client.get_experiment_by_name("reach").experiment_id], "tags.job = 'kl_sweep'"
    )[0]
    assert parent.data.params["reach_rounds"] == "2"
    r = CliRunner().invoke(
        _app(),
        [
            "sweep",
            "--reward-model",
            "models:/banner-reward-model/1",
            "--logs",
            str(logs),
            "--kl-targets",
            "0.5,1",
            "--max-kl",
            "1",
            *base,
        ],
    )
    assert (
        r.exit_code == 2 and "error: --max-kl: 1 must be above the largest --kl-targets budget 1" in r.output
    )
