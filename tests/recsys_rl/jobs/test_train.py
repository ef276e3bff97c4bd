"""A tracked training job end to end: MLflow run contents and the registered model."""

import mlflow
import pytest
import torch

from recsys_rl.baseline import train_baseline
from recsys_rl.cli.common import audit_world
from recsys_rl.config import RunConfig, TrackingConfig, per_banner
from recsys_rl.jobs.train import train_job
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.tracking import load_logits_model
from tests.recsys_rl.helpers import BASELINE, POLICY, SMALL, small_logs_dir, small_sim, small_train


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("job")
    cfg = RunConfig(
        sim=SMALL,
        policy=POLICY,
        baseline=BASELINE,
        train=small_train(total_impressions=20_480, eval_every=5),
        tracking=TrackingConfig(tracking_uri=f"sqlite:///{root}/mlflow.db", experiment="test-jobs"),
    )
    logs = read_logs(small_logs_dir(str(root)))
    ref = train_baseline(logs, SMALL.n_products, POLICY, BASELINE, seed=0, progress=False)
    res = train_job(cfg, small_sim(), reference=ref, progress=False, audit=audit_world(small_sim()))
    return cfg, res


def test_run_has_params_tags_metrics_and_artifacts(job):
    cfg, res = job
    run = mlflow.MlflowClient(cfg.tracking.tracking_uri).get_run(res.run_id)
    assert run.data.params["train.kl_target"] == str(cfg.train.kl_target)
    assert run.data.params["sim.n_products"] == "200"
    assert run.data.tags["reward_scheme"] == "graded" and run.data.tags["seed"] == "0"
    assert run.data.tags["data_source"] == "simulator"
    for m in (
        "oracle_gap_closed",
        "kl_to_reference",
        "clicks_per_impression",
        "ctr",
        "purchases_per_impression",
        "revenue_per_impression",
        "reward_ctr",
        "multi_purchases_per_impression",
        "coverage",
        "entropy",
        "final_oracle_gap_closed",
    ):
        assert m in run.data.metrics, m
    history = mlflow.MlflowClient(cfg.tracking.tracking_uri).get_metric_history(
        res.run_id, "oracle_gap_closed"
    )
    assert len(history) >= 3  # evaluated along the way, not only at the end
    arts = {a.path for a in mlflow.MlflowClient(cfg.tracking.tracking_uri).list_artifacts(res.run_id)}
    assert {"config.yaml", "learning_curves.png", "evaluation.csv"} <= arts


def test_evaluation_table_compares_reference_finetuned_oracle(job):
    _, res = job
    t = res.table
    assert list(t.index) == ["reference", "fine-tuned", "oracle"]
    assert (
        t.loc["oracle", "reward_graded"]
        >= t.loc["fine-tuned", "reward_graded"]
        > t.loc["reference", "reward_graded"]
    )


def test_registered_model_loads_back_and_gives_the_same_banners(job):
    cfg, res = job
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    assert res.model_version is not None
    model = load_logits_model(f"models:/{cfg.tracking.registered_model}/{res.model_version}")
    sim = small_sim()
    g = torch.Generator().manual_seed(3)
    ctx = sim.contexts(sim.sample_users(64, g), g)
    loaded = model(ctx.viewed, ctx.history).topk(5).indices
    assert torch.equal(loaded, res.policy.greedy(ctx))


def test_a_warm_started_job_logs_the_warm_start_and_needs_the_logs(tmp_path):
    from recsys_rl.config import WarmStartConfig

    cfg = RunConfig(
        sim=SMALL,
        policy=POLICY,
        baseline=BASELINE,
        train=small_train(total_impressions=4096, eval_every=5),
        warm_start=WarmStartConfig(enabled=True, virtual_impressions=8192),
        tracking=TrackingConfig(
            tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="warm", log_model=False
        ),
    )
    logs = read_logs(small_logs_dir(str(tmp_path)))
    res = train_job(cfg, small_sim(), logs=logs, progress=False)
    m = mlflow.MlflowClient(cfg.tracking.tracking_uri).get_run(res.run_id).data.metrics
    assert 0 < m["warm_start_kl"] <= per_banner(cfg.train.kl_hard_limit, 5) and m["warm_start_updates"] > 0
    with pytest.raises(ValueError, match="warm_start.enabled"):
        train_job(cfg, small_sim(), reference=res.reference, progress=False)


def test_every_row_carries_the_bias_audit_and_the_run_the_lorenz_curves(job):
    cfg, res = job
    table = res.table
    for m in ("exposure_gini", "tail_share", "popularity_lift", "calibration_kl", "jaccard"):
        assert table[m].notna().all(), m
    assert ((table["exposure_gini"] > 0) & (table["exposure_gini"] < 1)).all()
    assert {"segment_light_buyers_gap_closed", "segment_price_sensitive_value"} <= set(table.columns)
    assert table.loc["oracle", "segment_heavy_buyers_gap_closed"] == pytest.approx(1.0)
    run = mlflow.MlflowClient(cfg.tracking.tracking_uri).get_run(res.run_id)
    assert "final_exposure_gini" in run.data.metrics and "exposure_gini" in run.data.metrics
    arts = {a.path for a in mlflow.MlflowClient(cfg.tracking.tracking_uri).list_artifacts(res.run_id)}
    assert "exposure_lorenz.png" in arts
