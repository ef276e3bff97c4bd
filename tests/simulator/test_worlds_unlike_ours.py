"""Worlds unlike our default: a realistic click level and repeat interest (retargeting works best)."""

import pytest
import torch

from recsys_rl.config import SimConfig, load, load_reward
from recsys_rl.evaluation import banner_metrics, make_eval_set
from recsys_rl.yardsticks.common import context_items
from recsys_rl.yardsticks.popularity import Popularity
from recsys_rl.yardsticks.reshow import ReshowContext
from simulator import Simulator
from simulator.env import random_banners
from tests.simulator.worlds import small_config

GRADED = load_reward("graded")


def oracle_in_context_share(sim: Simulator, n: int = 1000) -> float:
    """Share of the oracle's banner slots that show a product of the user's context."""
    es = make_eval_set(sim, n, seed=3)
    best = sim.oracle(es.users, GRADED)
    ctx = context_items(es.contexts)
    return (best.unsqueeze(-1) == ctx.unsqueeze(1)).any(-1).float().mean().item()


def test_repeat_interest_makes_the_best_banner_reshow_what_the_user_viewed():
    plain = Simulator(small_config())
    repeat = Simulator(small_config(repeat_interest=2.0, repeat_interest_items=8))
    assert oracle_in_context_share(repeat) > 0.4
    assert oracle_in_context_share(repeat) > 2 * oracle_in_context_share(plain)


def test_repeat_interest_raises_exactly_the_favourites_click_and_purchase_rates():
    plain = Simulator(small_config())
    repeat = Simulator(small_config(repeat_interest=2.0, repeat_interest_items=8))
    users = torch.arange(50)
    fav = repeat.population.consider_items[users, :8]
    others = repeat.population.consider_items[users, 8:16]
    for items, boosted in ((fav, True), (others, False)):
        a, b = plain.rates(users, items), repeat.rates(users, items)
        logit = torch.logit
        delta_click = logit(b.click.double()) - logit(a.click.double())
        delta_buy = logit(b.purchase.double()) - logit(a.purchase.double())
        want = 2.0 if boosted else 0.0
        assert torch.allclose(delta_click, torch.full_like(delta_click, want), atol=1e-3)
        assert torch.allclose(delta_buy, torch.full_like(delta_buy, want), atol=1e-3)
    whole = repeat.catalogue_rates(users)  # the oracle's view agrees with the banner's
    assert torch.allclose(whole.click.gather(1, fav), repeat.rates(users, fav).click)


def test_repeat_interest_is_off_by_default_and_leaves_the_world_unchanged():
    assert SimConfig().repeat_interest == 0.0
    a, b = Simulator(small_config()), Simulator(small_config(repeat_interest_items=5))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    users = a.sample_users(64, g1)
    assert torch.equal(a.contexts(users, g1).history, b.contexts(b.sample_users(64, g2), g2).history)
    banners = random_banners(64, a.n_products, torch.Generator().manual_seed(2))
    assert torch.equal(a.expected(users, banners).click, b.expected(users, banners).click)


def test_repeat_interest_items_beyond_the_consideration_set_is_refused():
    with pytest.raises(ValueError, match="repeat_interest_items"):
        small_config(repeat_interest_items=31)


def test_realistic_preset_clicks_at_public_log_levels():
    cfg = load(SimConfig, "configs/sim/realistic.yaml")
    sim = Simulator(cfg)
    es = make_eval_set(sim, 2000, seed=1)
    best = sim.oracle(es.users, GRADED)
    oracle = banner_metrics(sim, es.users, best, {})
    uniform = banner_metrics(sim, es.users, random_banners(2000, sim.n_products, torch.Generator()), {})
    reshow = banner_metrics(
        sim, es.users, ReshowContext(Popularity(torch.zeros(1000), 5)).greedy(es.contexts), {}
    )
    assert 0.02 <= oracle["ctr"] <= 0.04  # the best possible banner: 2-4% per displayed product
    assert 0.003 <= reshow["ctr"] <= 0.01  # a plain recommender: 0.3-1%, as public logs show
    assert uniform["ctr"] < 0.003
    default = Simulator(load(SimConfig, "configs/sim/small.yaml"))  # the same world at our click level
    assert banner_metrics(default, es.users, best, {})["ctr"] > 0.3
