"""Sampled responses agree with the exact expectations, and the physics has the promised shape."""

import pytest
import torch

from recsys_rl.config import RewardScheme
from simulator import Simulator, random_banners
from simulator.response import examination
from tests.simulator.worlds import small_config

N_DRAWS = 200_000
GRADED = RewardScheme(name="graded", click=1, purchase=5, multi_purchase=3)


def _within_standard_errors(samples: torch.Tensor, expected: torch.Tensor, k: float = 5.0) -> None:
    """samples (n, K) of a per-position quantity vs its exact mean (K,): |mean - E| <= k * SE."""
    mean = samples.double().mean(0)
    se = samples.double().std(0) / samples.shape[0] ** 0.5
    gap = (mean - expected.double()).abs()
    assert (gap <= k * se + 1e-6).all(), (
        f"mean {mean.tolist()} vs exact {expected.tolist()} (se {se.tolist()})"
    )


def _busy_user_and_banner(sim: Simulator) -> tuple[int, torch.Tensor]:
    """A user with a high basket rate shown their graded-oracle banner: every outcome is frequent."""
    user = int(sim.population.basket.argmax())
    return user, sim.oracle(torch.tensor([user]), GRADED)[0]


@pytest.mark.parametrize("model", ["pbm", "cascade"])
def test_fixed_banner_rates_converge_to_exact_expectations(model):
    sim = Simulator(small_config(click_model=model))
    user, banner = _busy_user_and_banner(sim)
    users = torch.full((N_DRAWS,), user)
    banners = banner.expand(N_DRAWS, -1)
    out = sim.respond(users, banners, torch.Generator().manual_seed(11))
    exp = sim.expected(users[:1], banners[:1])
    assert exp.multi.min() * N_DRAWS > 100  # every outcome happens often enough to test
    _within_standard_errors(out.clicks, exp.click[0])
    _within_standard_errors(out.purchases, exp.purchase[0])
    _within_standard_errors(out.multi, exp.multi[0])
    _within_standard_errors(out.units, exp.units[0])
    _within_standard_errors(out.revenue, exp.revenue[0])


@pytest.mark.parametrize("model", ["pbm", "cascade"])
def test_population_rates_converge_to_mean_exact_expectations(model):
    sim = Simulator(small_config(click_model=model))
    g = torch.Generator().manual_seed(5)
    users = sim.sample_users(N_DRAWS, g)
    banners = random_banners(N_DRAWS, sim.n_products, g)
    out = sim.respond(users, banners, g)
    exp = sim.expected(users, banners)
    for sampled, exact in [
        (out.clicks, exp.click),
        (out.purchases, exp.purchase),
        (out.multi, exp.multi),
        (out.units, exp.units),
        (out.revenue, exp.revenue),
    ]:
        _within_standard_errors(sampled - exact, torch.zeros(5))


def test_cascade_clicks_at_most_once_per_banner(cascade_sim):
    g = torch.Generator().manual_seed(0)
    users = cascade_sim.sample_users(50_000, g)
    out = cascade_sim.respond(users, random_banners(50_000, cascade_sim.n_products, g), g)
    assert out.clicks.sum(1).max() == 1
    assert (out.units[out.clicks == 0] == 0).all()


def test_units_only_where_clicked_and_revenue_is_price_times_units(sim):
    g = torch.Generator().manual_seed(0)
    users = sim.sample_users(50_000, g)
    banners = random_banners(50_000, sim.n_products, g)
    out = sim.respond(users, banners, g)
    assert (out.units[out.clicks == 0] == 0).all()
    assert torch.equal(out.revenue, out.units * sim.prices[banners])
    assert (out.units == out.units.round()).all()


def test_cascade_examination_is_bias_times_no_earlier_click():
    c = torch.tensor([[0.5, 0.2, 0.1, 0.3, 0.4]])
    pb = torch.tensor([1.0, 0.7, 0.5, 0.4, 0.3])
    e = examination(c, pb, "cascade")[0]
    manual = [1.0, 0.7 * 0.5, 0.5 * 0.5 * 0.8, 0.4 * 0.5 * 0.8 * 0.9, 0.3 * 0.5 * 0.8 * 0.9 * 0.7]
    assert torch.allclose(e, torch.tensor(manual))
    assert torch.equal(examination(c, pb, "pbm")[0], pb)


def test_clickbait_draws_more_clicks_but_fewer_purchases_per_click(sim):
    g = torch.Generator().manual_seed(2)
    users = sim.sample_users(N_DRAWS, g)
    banners = random_banners(N_DRAWS, sim.n_products, g)
    out = sim.respond(users, banners, g)
    bait = sim.catalogue.is_clickbait[banners]
    ctr_bait, ctr_other = out.clicks[bait].mean(), out.clicks[~bait].mean()
    buy_bait = out.purchases[bait].sum() / out.clicks[bait].sum()
    buy_other = out.purchases[~bait].sum() / out.clicks[~bait].sum()
    assert ctr_bait > 1.5 * ctr_other
    assert buy_bait < 0.5 * buy_other


@pytest.mark.parametrize("model", ["pbm", "cascade"])
def test_same_product_is_clicked_less_at_lower_positions(model):
    sim = Simulator(small_config(click_model=model))
    user, banner = _busy_user_and_banner(sim)
    rotations = torch.stack([banner.roll(r) for r in range(5)])  # each product once at each position
    n = 40_000
    banners = rotations.repeat(n, 1)
    out = sim.respond(torch.full((5 * n,), user), banners, torch.Generator().manual_seed(9))
    for j in banner.tolist():
        at = banners == j
        rate = torch.stack([out.clicks[:, k][at[:, k]].mean() for k in range(5)])
        se = (rate * (1 - rate) / n).sqrt()
        assert (rate[1:] <= rate[:-1] + 3 * (se[1:] + se[:-1])).all(), rate
        assert rate[0] > rate[4] + 5 * (se[0] + se[4])
