"""Banners of K != 5 products: the simulator's exact expectations, oracle, behaviour and logs follow K."""

import pytest
import torch

from recsys_rl.config import RewardScheme, SimConfig
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.records import POSITION_BIAS_CURVE
from recsys_rl.rewards import expected_reward
from simulator import Simulator, random_banners
from simulator.behaviour import ExploringBehaviour, PopularityBehaviour
from simulator.logged import generate_logs
from tests.simulator.worlds import small_config

GRADED = RewardScheme(name="graded", click=1, purchase=5, multi_purchase=3)
N_DRAWS = 200_000


def test_banner_size_cuts_the_default_position_bias_and_checks_a_given_one():
    assert SimConfig().banner_size == 5 and SimConfig().position_bias == [1.0, 0.7, 0.5, 0.4, 0.3]
    assert SimConfig(banner_size=3).position_bias == [1.0, 0.7, 0.5]
    assert SimConfig(banner_size=8).position_bias == list(POSITION_BIAS_CURVE[:8])
    # a preset that writes the default 5-curve out still works with another K
    assert SimConfig(banner_size=3, position_bias=[1.0, 0.7, 0.5, 0.4, 0.3]).position_bias == [1.0, 0.7, 0.5]
    assert SimConfig(banner_size=3, position_bias=[1.0, 0.5, 0.2]).position_bias == [1.0, 0.5, 0.2]
    with pytest.raises(ValueError, match="(?s)position_bias.*needs 3 values"):
        SimConfig(banner_size=3, position_bias=[1.0, 0.5, 0.2, 0.1])
    for bad in (0, 11):
        with pytest.raises(ValueError, match="banner_size"):
            SimConfig(banner_size=bad)


@pytest.mark.parametrize("k", [3, 8])
@pytest.mark.parametrize("model", ["pbm", "cascade"])
def test_sampled_outcomes_converge_to_exact_expectations(k, model):
    sim = Simulator(small_config(banner_size=k, click_model=model))
    g = torch.Generator().manual_seed(5)
    users = sim.sample_users(N_DRAWS, g)
    banners = random_banners(N_DRAWS, sim.n_products, g, k)
    out = sim.respond(users, banners, g)
    exp = sim.expected(users, banners)
    assert out.clicks.shape == exp.click.shape == (N_DRAWS, k)
    for sampled, exact in [
        (out.clicks, exp.click),
        (out.purchases, exp.purchase),
        (out.units, exp.units),
        (out.revenue, exp.revenue),
    ]:
        diff = (sampled - exact).double()
        se = diff.std(0) / N_DRAWS**0.5
        assert (diff.mean(0).abs() <= 5 * se + 1e-6).all()


@pytest.mark.parametrize("k", [3, 8])
def test_oracle_has_k_products_and_beats_random_banners(k):
    sim = Simulator(small_config(banner_size=k))
    users = torch.arange(32)
    oracle = sim.oracle(users, GRADED)
    assert oracle.shape == (32, k) and (oracle.sort(1).values.diff(1) > 0).all()
    best = expected_reward(GRADED, sim.expected(users, oracle))
    many = users.repeat_interleave(500)
    rand = expected_reward(
        GRADED,
        sim.expected(many, random_banners(len(many), sim.n_products, torch.Generator().manual_seed(0), k)),
    )
    assert (rand.view(32, 500) <= best[:, None] + 1e-4 * best[:, None].abs()).all()


def test_a_banner_of_the_wrong_size_is_refused():
    sim = Simulator(small_config(banner_size=3))
    with pytest.raises(ValueError, match=r"expected shape \(B, 3\)"):
        sim.expected(torch.arange(2), torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]))


@pytest.mark.parametrize("k", [3, 8])
def test_behaviours_draw_k_products_with_exact_propensities(k):
    pop = torch.rand(9, generator=torch.Generator().manual_seed(0)) + 0.1
    b = PopularityBehaviour(pop, k=k).sample(50_000, torch.Generator().manual_seed(1))
    assert b.items.shape == (50_000, k) and (b.items.sort(1).values.diff(1) > 0).all()
    # the most frequent banner's share matches its propensity
    keys, counts = torch.unique(b.items, dim=0, return_counts=True)
    top = counts.argmax()
    lp = PopularityBehaviour(pop, k=k).log_prob(keys[top : top + 1])
    p, n = lp.exp().item(), len(b)
    assert abs(counts[top].item() / n - p) < 5 * (p * (1 - p) / n) ** 0.5 + 1e-4
    exploring = ExploringBehaviour(lambda ctx: torch.zeros(len(ctx), 9), 9, 0.3, k=k)
    assert exploring.log_n_banners == pytest.approx(torch.arange(9, 9 - k, -1).double().log().sum().item())


@pytest.mark.parametrize("k", [3, 8])
def test_generated_logs_hold_k_product_banners(tmp_path, k):
    sim = Simulator(small_config(banner_size=k))
    logged = read_logs(generate_logs(sim, 300, tmp_path, seed=0, progress=False))
    assert logged.banners.items.shape == (300, k) and logged.outcomes.clicks.shape == (300, k)
    assert torch.isfinite(logged.banners.log_prob).all()


def test_a_world_can_emit_user_features_and_home_page_contexts_that_logs_keep(tmp_path):
    cfg = small_config(user_feature_dim=6, home_page_share=0.5)
    sim = Simulator(cfg)
    users = sim.sample_users(4000, torch.Generator().manual_seed(0))
    ctx = sim.contexts(users, torch.Generator().manual_seed(1))
    assert ctx.user_features.shape == (4000, 6)
    assert 0.45 < (ctx.viewed == -1).float().mean() < 0.55  # home-page banners: no viewed product
    # the features carry the user's taste: most of their variance is explained by it
    taste = sim.population.taste[users]
    fit = torch.linalg.lstsq(taste, ctx.user_features).solution
    r2 = 1 - (taste @ fit - ctx.user_features).pow(2).mean(0) / ctx.user_features.var(0)
    assert (r2 > 0.5).all() and r2.mean() > 0.7, r2
    logged = read_logs(generate_logs(sim, 500, tmp_path, seed=0, progress=False))
    assert logged.contexts.user_features.shape == (500, 6) and (logged.contexts.viewed == -1).any()
    # the default world draws exactly what it drew before: no features, every context on a product page
    plain = Simulator(small_config()).contexts(users[:50], torch.Generator().manual_seed(1))
    assert plain.user_features is None and (plain.viewed >= 0).all()


def test_a_policy_learns_from_feature_contexts_of_the_simulator(tmp_path):
    """Baseline on logs with user features and home pages: it takes the features and beats popularity."""
    from recsys_rl.baseline import train_baseline
    from recsys_rl.config import BaselineConfig, PolicyConfig, builtin_rewards, load_reward
    from recsys_rl.evaluation import Evaluator

    sim = Simulator(
        small_config(user_feature_dim=8, user_feature_noise=0.1, home_page_share=1.0, banner_size=3)
    )
    logged = read_logs(generate_logs(sim, 20_000, tmp_path, seed=0, progress=False))
    ref = train_baseline(
        logged,
        sim.n_products,
        PolicyConfig(embed_dim=16, hidden_dim=64),
        BaselineConfig(epochs=2),
        0,
        progress=False,
    )
    assert ref.n_user_features == 8 and ref.banner_size == 3
    ev = Evaluator(sim, ref, load_reward("graded"), builtin_rewards(), 1024, seed=3)
    pop = sim.popularity.topk(3).indices.expand(1024, -1)
    assert ev.reference_metrics["reward_graded"] > 1.2 * ev.score_banners(pop)["reward_graded"]
