"""`recsys-rl evaluate`: a table and one MLflow run on good logs; one line, exit 2 and no trace on bad ones."""

import os

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from recsys_rl import tracking
from recsys_rl.cli.evaluate import evaluate
from recsys_rl.config import SimConfig, TrackingConfig, load_reward
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.ope.marginals import banner_log_prob
from recsys_rl.policy import BannerPolicy, load_policy, save_policy
from recsys_rl.rewards import reward
from simulator import Simulator
from simulator.logged import generate_logs

N_PRODUCTS = 30
ITEMS = [f"item_{k}" for k in range(5)]
CLICKS = [f"click_{k}" for k in range(5)]


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(evaluate)
    return app


def _policy(path, n_products=N_PRODUCTS, seed=0):
    torch.manual_seed(seed)
    save_policy(BannerPolicy(n_products, embed_dim=8, hidden_dim=16), path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    sim = Simulator(SimConfig(n_products=N_PRODUCTS, n_categories=3, n_users=200, consideration_size=12))
    logs = generate_logs(sim, 2000, root / "logs", seed=0, progress=False)
    return {
        "logs": logs,
        "policy": _policy(root / "policy.pt"),
        "reference": _policy(root / "ref.pt", seed=1),
    }


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """MLflow puts artifacts under ./mlruns: keep them (and anything else written) inside the test's dir."""
    monkeypatch.chdir(tmp_path)


def invoke(args, tmp_path):
    return CliRunner().invoke(_app(), [*args, "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])


def test_evaluate_prints_a_table_and_logs_one_mlflow_run(world, tmp_path):
    args = [
        "--logs",
        str(world["logs"]),
        "--policy",
        str(world["policy"]),
        "--reference",
        str(world["reference"]),
        "--estimators",
        "ips,snips,iips,dm,dr",
        "--samples",
        "16",
    ]
    result = invoke(args, tmp_path)
    assert result.exit_code == 0, result.output
    for text in ("IPS", "SNIPS", "IIPS", "DM", "DR", "95% CI", "ESS", "max weight", "2,000", "MLflow run id"):
        assert text in result.stdout
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("recsys-rl-ope").experiment_id])
    metrics, params = run.data.metrics, run.data.params
    assert {f"ope_{e}_value" for e in ("ips", "snips", "iips", "dm", "dr")} <= set(metrics)
    assert params["estimators"] == "ips,snips,iips,dm,dr" and params["n_impressions"] == "2000"
    assert params["behaviour_marginals"] == "show rate" and params["target_marginals"].startswith("sampled")
    assert {"ope_estimates.csv", "ope_estimates.json"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)
    }
    # IPS by hand: mean over logged banners of reward * pi(a|x) / mu(a|x)
    logged = read_logs(world["logs"])
    with torch.no_grad():
        s = load_policy(world["policy"]).logits(logged.contexts).double().numpy()
    w = np.exp(banner_log_prob(s, logged.banners.items.numpy()) - logged.banners.log_prob.double().numpy())
    r = reward(load_reward("graded"), logged.outcomes).double().numpy()
    assert metrics["ope_ips_value"] == pytest.approx((w * r).mean(), rel=1e-5)


def _flat_clicks(world, path, **extra):
    logged = read_logs(world["logs"])
    df = pd.DataFrame({"viewed": logged.contexts.viewed.numpy()})
    for k in range(5):
        df[ITEMS[k]] = logged.banners.items[:, k].numpy()
        df[CLICKS[k]] = logged.outcomes.clicks[:, k].int().numpy()
    df["prop"] = np.exp(logged.banners.log_prob.double().numpy())
    for k, v in extra.items():
        df[k] = v
    df.to_csv(path, index=False)
    return path


def _mapping(path, **fields):
    path.write_text(yaml.safe_dump({"viewed": "viewed", "items": ITEMS, "clicks": CLICKS, **fields}))
    return str(path)


def test_reference_policy_on_a_clicks_only_csv_with_a_mapping(world, tmp_path):
    data = _flat_clicks(world, tmp_path / "flat.csv")
    mapping = _mapping(tmp_path / "map.yaml", propensity="prop")
    args = [
        "--logs",
        str(data),
        "--mapping",
        mapping,
        "--policy",
        "reference",
        "--reference",
        str(world["reference"]),
        "--reward",
        "ctr",
        "--estimators",
        "snips,iips",
        "--samples",
        "8",
    ]
    result = invoke(args, tmp_path)
    assert result.exit_code == 0, result.output
    assert "SNIPS" in result.stdout and "IIPS" in result.stdout and "(ctr reward" in result.stdout


@pytest.mark.slow  # exporting the pt2 model takes ~5 s
def test_a_registered_mlflow_model_is_evaluated_like_its_saved_file(world, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    torch.manual_seed(0)
    policy = BannerPolicy(N_PRODUCTS, embed_dim=8, hidden_dim=16)
    tracking.setup(TrackingConfig(tracking_uri=uri), "models")
    with mlflow.start_run():
        tracking.log_policy(policy, "banner-policy")
    base = ["--logs", str(world["logs"]), "--estimators", "ips", "--samples", "4"]
    from_registry = invoke([*base, "--policy", "models:/banner-policy/1"], tmp_path)
    from_file = invoke([*base, "--policy", str(world["policy"])], tmp_path)
    assert from_registry.exit_code == 0 and from_file.exit_code == 0, from_registry.output
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("recsys-rl-ope").experiment_id])
    values = [r.data.metrics["ope_ips_value"] for r in runs]
    assert len(values) == 2 and values[0] == pytest.approx(values[1], rel=1e-5)


def _bad_propensity(world, tmp_path):
    data = _flat_clicks(world, tmp_path / "flat.csv")
    df = pd.read_csv(data)
    df.loc[3, "prop"] = 0.0
    df.to_csv(data, index=False)
    return [
        "--logs",
        str(data),
        "--mapping",
        _mapping(tmp_path / "map.yaml", propensity="prop"),
        "--reward",
        "ctr",
    ], "flat.csv: prop: row 3 (line 5): propensity 0.0 is not in (0, 1]"


def _unknown_product(world, tmp_path):
    small = _policy(tmp_path / "small.pt", n_products=20)
    return ["--logs", str(world["logs"]), "--policy", str(small)], "is outside [0, 20)"


BAD = {
    "propensity out of range": _bad_propensity,
    "unknown product": _unknown_product,
    "missing directory": lambda world, tmp: (["--logs", str(tmp / "nope")], "not a log directory"),
    "bad mapping": lambda world, tmp: (
        [
            "--logs",
            str(world["logs"]),
            "--mapping",
            _mapping(tmp / "m.yaml", items=ITEMS[:2], propensity="p"),
        ],
        "clicks: needs 2 column names, one per banner position (as items)",
    ),
    "clicks-only log, graded reward": lambda world, tmp: (
        [
            "--logs",
            str(_flat_clicks(world, tmp / "f.csv")),
            "--mapping",
            _mapping(tmp / "m.yaml", propensity="prop"),
        ],
        "--reward: scheme 'graded' rewards units, which this log does not record",
    ),
    "ips without banner propensity": lambda world, tmp: (
        [
            "--logs",
            str(_flat_clicks(world, tmp / "f.csv", **{f"p{k}": 0.2 for k in range(5)})),
            "--reward",
            "ctr",
            "--mapping",
            _mapping(tmp / "m.yaml", position_propensities=[f"p{k}" for k in range(5)]),
        ],
        "ips/snips need a banner propensity column",
    ),
    "unknown estimator": lambda world, tmp: (
        ["--logs", str(world["logs"]), "--estimators", "ips,magic"],
        "--estimators: unknown 'magic'",
    ),
    "registry store missing": lambda world, tmp: (
        ["--logs", str(world["logs"]), "--policy", "models:/banner-policy/1"],
        "mlflow.db does not exist",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(world, tmp_path, case):
    args, message = BAD[case](world, tmp_path)
    if "--policy" not in args:
        args += ["--policy", str(world["policy"])]
    before = sorted(os.listdir(tmp_path))
    result = invoke(args, tmp_path)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert result.stdout == ""
    assert sorted(os.listdir(tmp_path)) == before  # no mlflow.db, no run, no files
