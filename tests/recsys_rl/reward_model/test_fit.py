import pytest
import torch
from scipy.stats import spearmanr

from recsys_rl.config import SimConfig
from recsys_rl.records import OutcomeBatch
from recsys_rl.reward_model import RewardModelConfig, RewardModelDataError, fit_reward_model
from recsys_rl.reward_model.metrics import evaluate, expected_calibration_error
from simulator import Simulator
from tests.recsys_rl.reward_model.helpers import TINY, simulate

FAST = RewardModelConfig(embed_dim=16, hidden_dim=32, epochs=15, patience=2, batch_size=512)


@pytest.fixture(scope="module")
def tiny():
    sim = Simulator(TINY)
    users, logs = simulate(sim, lambda c: torch.zeros(len(c), sim.n_products), 1.0, 30_000, seed=0)
    return sim, fit_reward_model(logs, sim.n_products, FAST, progress=False)


def test_recovers_the_simulators_click_probabilities_on_a_tiny_world(tiny):
    sim, fit = tiny
    users, fresh = simulate(sim, lambda c: torch.zeros(len(c), sim.n_products), 1.0, 20_000, seed=1)
    with torch.no_grad():
        pred = fit.model.expected(fresh.contexts, fresh.banners.items)
    true = sim.expected(users, fresh.banners.items)
    # the context reveals the user only partly, so compare per (product, position) averages ...
    idx = fresh.banners.items * 5 + torch.arange(5)
    n = torch.bincount(idx.reshape(-1), minlength=sim.n_products * 5).clamp_min(1)

    def cell_mean(x):
        return torch.zeros(sim.n_products * 5).index_add_(0, idx.reshape(-1), x.reshape(-1)) / n

    assert (cell_mean(pred.click) - cell_mean(true.click)).abs().max() < 0.04
    assert (cell_mean(pred.purchase) - cell_mean(true.purchase)).abs().max() < 0.04
    # ... and per impression the prediction tracks the truth
    assert torch.corrcoef(torch.stack([pred.click.reshape(-1), true.click.reshape(-1)]))[0, 1] > 0.8
    exam = fit.model.examination()
    truth = torch.tensor(TINY.position_bias) / TINY.position_bias[0]
    assert (exam - truth).abs().max() < 0.05


def test_held_out_metrics_are_computed_on_the_validation_share(tiny):
    _, fit = tiny
    m, curves = evaluate(fit.model, fit.validation)
    assert m["n_click"] == len(fit.validation) * 5
    assert 0.6 < m["auc_click"] <= 1 and m["ece_click"] < 0.02
    assert curves["click"].count.sum() == m["n_click"]


def test_expected_calibration_error_by_hand():
    import numpy as np

    p = np.array([0.05, 0.05, 0.95, 0.95])
    y = np.array([0.0, 1.0, 1.0, 1.0])
    # bin 0: mean p 0.05, rate 0.5 -> 0.45; bin 9: 0.95 vs 1.0 -> 0.05; weights 1/2 each
    assert expected_calibration_error(p, y, 10) == pytest.approx(0.25)


def test_strong_position_bias_does_not_distort_the_product_ranking():
    cfg = SimConfig(**{**TINY.model_dump(), "position_bias": [1.0, 0.3, 0.12, 0.06, 0.03]})
    sim = Simulator(cfg)
    all_users = torch.arange(sim.n_users)
    true_click = sim.catalogue_rates(all_users).click.mean(0)  # (N,) P(click | examined), population mean
    worst_first = (-true_click).argsort().argsort().float()  # the logger puts the least clickable on top
    users, logs = simulate(
        sim, lambda c: (12.0 * worst_first / sim.n_products).expand(len(c), -1), 0.3, 30_000, seed=6
    )
    fit = fit_reward_model(logs, sim.n_products, FAST, progress=False)
    with torch.no_grad():
        rel = torch.sigmoid(fit.model.catalogue_logits(logs.contexts[:2000])[0]).mean(0)
    items, clicks = logs.banners.items.reshape(-1), logs.outcomes.clicks.reshape(-1)
    shows = torch.bincount(items, minlength=sim.n_products).clamp_min(1)
    naive = torch.zeros(sim.n_products).index_add_(0, items, clicks) / shows  # clicks per show
    rho_model = spearmanr(rel.numpy(), true_click.numpy()).statistic
    rho_naive = spearmanr(naive.numpy(), true_click.numpy()).statistic
    assert rho_model > max(0.95, rho_naive)  # clicks per show are confounded by where the logger put them


def _with(logs, **outcomes):
    o = logs.outcomes
    new = OutcomeBatch(outcomes.get("clicks", o.clicks), outcomes.get("units", o.units), o.revenue)
    return type(logs)(logs.contexts, logs.banners, new)


def test_bad_logs_are_refused_with_a_clear_error():
    sim = Simulator(TINY)
    _, logs = simulate(sim, lambda c: torch.zeros(len(c), sim.n_products), 1.0, 500, seed=2)
    with pytest.raises(RewardModelDataError, match="logs: clicks: no click in 500 impressions"):
        fit_reward_model(
            _with(logs, clicks=torch.zeros_like(logs.outcomes.clicks)), sim.n_products, progress=False
        )
    with pytest.raises(
        RewardModelDataError, match="logs: product ids: found id 23, but the catalogue has 20"
    ):
        fit_reward_model(logs, 20, progress=False)
    with pytest.raises(RewardModelDataError, match="logs: impressions: 10, need at least 50"):
        fit_reward_model(logs[:10], sim.n_products, progress=False)
    bad = logs.outcomes.units.clone()
    bad[logs.outcomes.clicks == 0] = 1.0
    with pytest.raises(
        RewardModelDataError, match="logs: units: a purchase at a position that was not clicked"
    ):
        fit_reward_model(_with(logs, units=bad), sim.n_products, progress=False)
    nan = logs.outcomes.clicks.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(RewardModelDataError, match="logs: clicks: holds NaN"):
        fit_reward_model(_with(logs, clicks=nan), sim.n_products, progress=False)
