import math

import mlflow
import numpy as np
import pytest
import torch

from recsys_rl.config import RunConfig, TrackingConfig, TrainConfig, load_reward
from recsys_rl.policy import BannerPolicy
from recsys_rl.reward_model.judges import ExactJudge
from recsys_rl.reward_model.sweep import fit_form, kl_sweep
from simulator import Simulator
from tests.recsys_rl.reward_model.helpers import TINY, known_model


@pytest.mark.parametrize("form", ["rl", "bon"])
def test_gao_schulman_hilton_forms_are_recovered_from_their_own_curves(form):
    d = np.linspace(0.2, 4.0, 12)
    alpha, beta = 1.3, 0.4
    gain = d * (alpha - beta * (np.log(d) if form == "rl" else d))
    f = fit_form(form, d, gain)
    assert (f.alpha, f.beta) == pytest.approx((alpha, beta), abs=1e-9)
    peak = math.exp(2 * (alpha / beta - 1)) if form == "rl" else (alpha / (2 * beta)) ** 2
    assert f.peak_kl == pytest.approx(peak)


def test_sweep_is_one_parent_run_with_a_child_per_budget_and_the_plot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sim = Simulator(TINY)
    scheme = load_reward("ctr")
    model = known_model(TINY.n_products, torch.linspace(-2, 2, TINY.n_products))
    reference = BannerPolicy(TINY.n_products, embed_dim=8, hidden_dim=16).frozen_copy()
    judge = ExactJudge(sim, scheme, 256, seed=1)
    g = torch.Generator().manual_seed(0)
    train_ctx = sim.contexts(sim.sample_users(1000, g), g)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = RunConfig(train=TrainConfig(total_impressions=8192, contexts_per_batch=256, minibatch_size=1024),
                    tracking=TrackingConfig(tracking_uri=uri))  # fmt: skip
    res = kl_sweep(
        reference, model, train_ctx, scheme, cfg, [0.5, 2.0], judge, progress=False, log=lambda s: None
    )
    assert list(res.table["method"]) == ["rl", "bon", "rl", "bon"]
    bon = res.table[res.table["method"] == "bon"]
    assert list(bon["n"]) == [3, 19] and (bon["proxy"] > res.reference_proxy).all()
    assert math.isfinite(res.recommended_kl_target) and res.recommended_kl_target in (0.5, 2.0)
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("recsys-rl-kl-sweep").experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == res.run_id]
    assert len(runs) == 3 and len(children) == 2
    assert {c.data.params["kl_target"] for c in children} == {"0.5", "2.0"}
    assert {"rl_proxy", "rl_gold", "rl_kl", "bon_gold"} <= set(children[0].data.metrics)
    parent = client.get_run(res.run_id)
    assert parent.data.tags["gold_estimator"] == "gold (exact, simulator)"
    assert "recommended_kl_target" in parent.data.metrics
    assert "overoptimisation.png" in [a.path for a in client.list_artifacts(res.run_id)]
