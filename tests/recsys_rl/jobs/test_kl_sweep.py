import math

import mlflow
import numpy as np
import pytest
import torch

from recsys_rl.config import RunConfig, TrackingConfig, TrainConfig, load_reward
from recsys_rl.jobs.judges import ExactJudge
from recsys_rl.jobs.kl_sweep import argmax_kl, fit_form, kl_sweep
from recsys_rl.policy import BannerPolicy
from simulator import Simulator
from tests.recsys_rl.reward_model.helpers import TINY, contexts, known_model


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
    cfg = RunConfig(
        train=TrainConfig(total_impressions=8192, contexts_per_batch=256, minibatch_size=1024),
        tracking=TrackingConfig(tracking_uri=uri),
    )
    res = kl_sweep(
        reference, model, train_ctx, scheme, cfg, [0.1, 0.4], judge, progress=False, log=lambda s: None
    )
    assert list(res.table["method"]) == ["rl", "bon", "rl", "bon"]
    bon = res.table[res.table["method"] == "bon"]
    assert list(bon["n"]) == [3, 19] and (bon["proxy"] > res.reference_proxy).all()
    assert math.isfinite(res.recommended_kl_target) and res.recommended_kl_target in (0.1, 0.4)
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("recsys-rl-kl-sweep").experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == res.run_id]
    assert len(runs) == 3 and len(children) == 2
    assert {c.data.params["kl_target"] for c in children} == {"0.1", "0.4"}
    assert {"rl_proxy", "rl_gold", "rl_kl", "bon_gold"} <= set(children[0].data.metrics)
    parent = client.get_run(res.run_id)
    assert parent.data.tags["gold_estimator"] == "gold (exact, simulator)"
    assert "recommended_kl_target" in parent.data.metrics
    assert "overoptimisation.png" in [a.path for a in client.list_artifacts(res.run_id)]


def test_an_unreached_budget_is_continued_and_no_budget_past_the_argmax_kl_is_added(tmp_path):
    sim = Simulator(TINY)
    scheme = load_reward("ctr")
    model = known_model(TINY.n_products, torch.linspace(-2, 2, TINY.n_products))
    reference = BannerPolicy(TINY.n_products, embed_dim=8, hidden_dim=16).frozen_copy()
    judge = ExactJudge(sim, scheme, 256, seed=1)
    g = torch.Generator().manual_seed(0)
    train_ctx = sim.contexts(sim.sample_users(1000, g), g)
    cfg = RunConfig(
        train=TrainConfig(total_impressions=4096, contexts_per_batch=256, minibatch_size=1024, lr=1e-2),
        tracking=TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"),
    )
    logged = []
    res = kl_sweep(
        reference,
        model,
        train_ctx,
        scheme,
        cfg,
        [0.01, 8.0],  # nats per displayed product: 0.05 and 40 per banner of 5
        judge,
        widen_to=1000.0,
        reach_rounds=3,
        progress=False,
        log=logged.append,
    )
    rl = res.table[res.table["method"] == "rl"].set_index("kl_target")
    assert list(rl.index) == [0.01, 8.0]  # 8 x 5 > the argmax's KL: the sweep is not widened past it
    assert 0 < res.argmax_kl < 40.0
    assert rl.loc[0.01, "rounds"] == 1  # a tiny budget is reached at once ...
    assert rl.loc[8.0, "rounds"] == 3  # ... a budget beyond reach gets every round it may have
    assert any("continuing" in line for line in logged)
    assert rl["gold"].idxmax() == 8.0  # the gold still rises at the largest budget, yet ...
    assert any("no larger budget binds" in line for line in logged)  # ... it is not widened
    s = res.summary
    assert s["proxy_gain_past_peak_at_limit"] == pytest.approx(
        res.argmax_proxy - rl.loc[s["gold_peak_kl_target"], "proxy"]
    )


def test_argmax_kl_is_the_reference_surprise_of_the_argmax_banner():
    n = 7
    reference = BannerPolicy(n, embed_dim=4, hidden_dim=8).frozen_copy()
    g = torch.Generator().manual_seed(0)
    ctx = sim_ctx = contexts(64, n)
    top = torch.stack([torch.randperm(n, generator=g)[:5] for _ in range(64)])
    with torch.no_grad():
        p = torch.softmax(reference.logits(sim_ctx).double(), -1)
    # Plackett-Luce by hand: product over positions of p[a_k] / (1 - sum of the earlier picks)
    by_hand = []
    for row, banner in zip(p, top.tolist(), strict=True):
        lp, used = 0.0, 0.0
        for a in banner:
            lp += math.log(row[a] / (1 - used))
            used += float(row[a])
        by_hand.append(-lp)
    assert argmax_kl(reference, top, ctx) == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-6)
