"""The seeded catalogue and population: determinism, shapes and the quantities they promise."""

import pytest
import torch

from simulator import Simulator, random_banners
from tests.simulator.worlds import small_config


def _same_world(a: Simulator, b: Simulator) -> bool:
    pairs = [
        (a.catalogue.vectors, b.catalogue.vectors),
        (a.catalogue.prices, b.catalogue.prices),
        (a.catalogue.appeal, b.catalogue.appeal),
        (a.catalogue.is_clickbait, b.catalogue.is_clickbait),
        (a.population.taste, b.population.taste),
        (a.population.consider_items, b.population.consider_items),
        (a.popularity, b.popularity),
    ]
    return all(torch.equal(x, y) for x, y in pairs)


def _traffic(sim: Simulator, seed: int):
    g = torch.Generator().manual_seed(seed)
    users = sim.sample_users(500, g)
    ctx = sim.contexts(users, g)
    banners = random_banners(500, sim.n_products, g)
    out = sim.respond(users, banners, g)
    return users, ctx, banners, out


def test_same_config_and_seed_give_identical_world_and_traffic():
    a, b = Simulator(small_config()), Simulator(small_config())
    assert _same_world(a, b)
    ta, tb = _traffic(a, 3), _traffic(b, 3)
    assert torch.equal(ta[0], tb[0])
    assert torch.equal(ta[1].viewed, tb[1].viewed) and torch.equal(ta[1].history, tb[1].history)
    assert torch.equal(ta[2], tb[2])
    for field in ("clicks", "units", "revenue"):
        assert torch.equal(getattr(ta[3], field), getattr(tb[3], field))


def test_different_seeds_give_different_worlds_and_traffic():
    a, b = Simulator(small_config(seed=1)), Simulator(small_config(seed=2))
    assert not _same_world(a, b)
    ta, tb = _traffic(a, 3), _traffic(a, 4)
    assert not torch.equal(ta[1].history, tb[1].history)
    assert not torch.equal(ta[3].clicks, tb[3].clicks)


def test_catalogue_has_configured_clickbait_share_and_positive_prices(sim):
    cat = sim.catalogue
    assert cat.is_clickbait.sum().item() == round(sim.cfg.clickbait_share * sim.n_products)
    assert (sim.prices > 0).all()
    assert torch.allclose(cat.vectors.norm(dim=1), torch.ones(sim.n_products), atol=1e-5)
    assert cat.category.max() < sim.cfg.n_categories


def test_category_sizes_follow_zipf_weights():
    sim = Simulator(small_config(n_products=5000, n_categories=5, consideration_size=20))
    share = torch.bincount(sim.catalogue.category, minlength=5).float() / 5000
    assert torch.allclose(share, sim.catalogue.category_weights, atol=0.03)
    assert share[0] > share[-1]


def test_consideration_sets_are_each_users_exact_top_products(sim):
    pop = sim.population
    affinity = pop.taste @ sim.catalogue.vectors.T
    top = torch.topk(affinity, sim.cfg.consideration_size, dim=1).values
    assert torch.allclose(pop.consider_logits * sim.cfg.context_temperature, top, atol=1e-6)
    got = affinity.gather(1, pop.consider_items)
    assert torch.allclose(got, top, atol=1e-6)


def test_popularity_is_smoothed_share_of_users_considering_each_product(sim):
    pop = sim.popularity
    assert abs(pop.sum().item() - 1) < 1e-5 and (pop > 0).all()
    counts = torch.bincount(sim.population.consider_items.reshape(-1), minlength=sim.n_products).double()
    share = counts / counts.sum()
    expected = 0.99 * share + 0.01 / sim.n_products
    assert torch.allclose(pop.double(), expected, rtol=1e-5, atol=1e-9)
    assert (pop[counts == 0] < pop[counts > 0].min()).all()


def test_user_parameters_have_configured_means():
    sim = Simulator(small_config(n_users=40_000, price_sensitivity_mean=0.8, basket_mean=0.4))
    assert abs(sim.population.sensitivity.mean().item() - 0.8) < 0.02
    assert abs(sim.population.basket.mean().item() - 0.4) < 0.02
    assert (sim.population.sensitivity > 0).all() and (sim.population.basket >= 0).all()


def test_random_banners_hold_distinct_products():
    g = torch.Generator().manual_seed(0)
    b = random_banners(5_000, 8, g)
    s = b.sort(dim=1).values
    assert (s.diff(dim=1) > 0).all()
    assert b.min() >= 0 and b.max() < 8


def test_respond_rejects_bad_banner_shape_and_ids(sim):
    g = torch.Generator().manual_seed(0)
    users = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="banners"):
        sim.respond(users, torch.zeros(3, 4, dtype=torch.long), g)
    with pytest.raises(ValueError, match="product ids"):
        sim.expected(users, torch.full((3, 5), sim.n_products))
    with pytest.raises(ValueError, match="same product twice"):
        sim.respond(users, torch.tensor([[1, 2, 3, 4, 1]] * 3), g)


def test_indexed_consideration_sets_match_exact_ones(monkeypatch):
    from recsys_rl.candidates import recall_at_m
    from simulator import users

    sim = Simulator(small_config(n_products=5000, n_users=500))
    monkeypatch.setattr(users, "EXACT_CONSIDERATION_MAX", 0)  # as above 200k products
    items, logits = users.consideration_sets(sim.population.taste, sim.catalogue.vectors, 30, 0.3)
    assert recall_at_m(items, sim.population.consider_items) >= 0.95
    assert (logits.diff(dim=1) <= 0).all()  # descending affinity, exact values
    aff = (sim.population.taste.unsqueeze(1) * sim.catalogue.vectors[items]).sum(-1)
    assert torch.allclose(logits, aff / 0.3, atol=1e-5)
