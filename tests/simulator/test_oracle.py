"""The oracle banner is the expected-reward maximum under the position-based model."""

import pytest
import torch

from recsys_rl.config import RewardScheme
from recsys_rl.rewards import expected_reward
from simulator import Simulator, random_banners
from tests.simulator.worlds import small_config

SCHEMES = [
    RewardScheme(name="graded", click=1, purchase=5, multi_purchase=3),
    RewardScheme(name="revenue", revenue=1),
    RewardScheme(name="ctr", click=1),
]


def _value(sim: Simulator, users: torch.Tensor, banners: torch.Tensor, scheme: RewardScheme) -> torch.Tensor:
    return expected_reward(scheme, sim.expected(users, banners))


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.name)
def test_oracle_beats_every_random_banner_for_every_user(sim, scheme):
    users = torch.arange(64)
    best = _value(sim, users, sim.oracle(users, scheme), scheme)
    n_random = 2000
    g = torch.Generator().manual_seed(0)
    many_users = users.repeat_interleave(n_random)
    rand = _value(sim, many_users, random_banners(len(many_users), sim.n_products, g), scheme)
    assert (rand.view(64, n_random) <= best[:, None] + 1e-4 * best[:, None].abs()).all()
    assert (best > rand.view(64, n_random).mean(1)).all()


@pytest.mark.parametrize("scheme", SCHEMES[:2], ids=lambda s: s.name)
def test_no_single_swap_or_replacement_improves_the_oracle(sim, scheme):
    users = torch.arange(8)
    oracle = sim.oracle(users, scheme)
    best = _value(sim, users, oracle, scheme)
    for u in range(len(users)):
        base = oracle[u]
        variants = []
        for k in range(5):
            for j in range(sim.n_products):
                if j not in base:
                    v = base.clone()
                    v[k] = j
                    variants.append(v)
            for k2 in range(k + 1, 5):
                v = base.clone()
                v[k], v[k2] = base[k2], base[k]
                variants.append(v)
        variants = torch.stack(variants)
        vals = _value(sim, torch.full((len(variants),), u), variants, scheme)
        assert vals.max() <= best[u] * (1 + 1e-5)


def test_oracle_is_deterministic_and_distinct_products(sim):
    users = torch.arange(100)
    a, b = sim.oracle(users, SCHEMES[0]), sim.oracle(users, SCHEMES[0])
    assert torch.equal(a, b)
    assert (a.sort(1).values.diff(dim=1) > 0).all()


def test_click_oracle_favours_clickbait_and_purchase_oracle_avoids_it(sim):
    users = torch.arange(500)
    bait = sim.catalogue.is_clickbait
    ctr_share = bait[sim.oracle(users, SCHEMES[2])].float().mean()
    buy_share = bait[sim.oracle(users, RewardScheme(name="purchase", purchase=1))].float().mean()
    assert ctr_share > 2 * sim.cfg.clickbait_share
    assert buy_share < ctr_share / 2


def test_oracle_scores_large_catalogue_in_blocks():
    sim = Simulator(small_config(n_products=30_000, n_users=300, n_categories=30))
    users = torch.arange(300)
    banners = sim.oracle(users, SCHEMES[0])
    g = torch.Generator().manual_seed(1)
    rand = random_banners(300, sim.n_products, g)
    assert (_value(sim, users, banners, SCHEMES[0]) >= _value(sim, users, rand, SCHEMES[0])).all()


def test_the_oracle_within_a_candidate_set_beats_its_other_banners_and_its_gains_are_its_value(sim):
    from simulator.oracle import oracle_within

    scheme, users = SCHEMES[0], torch.arange(32)
    g = torch.Generator().manual_seed(1)
    cand = torch.stack([torch.randperm(sim.n_products, generator=g)[:12] for _ in users])
    cand[:, -2:] = -1  # pads are never chosen
    banners, gains = oracle_within(sim.rates, users, cand, scheme)
    bias = sim.position_bias[: banners.shape[1]]
    assert torch.allclose((gains * bias).sum(1), _value(sim, users, banners, scheme), rtol=1e-5)
    for u in range(len(users)):  # ten other banners of the same 10 candidates never beat it
        valid = cand[u, :10]
        one = _value(sim, users[u].repeat(10), torch.stack([valid.roll(-i)[:5] for i in range(10)]), scheme)
        assert _value(sim, users[u : u + 1], banners[u : u + 1], scheme) >= one.max() - 1e-5
        assert set(banners[u].tolist()) <= set(valid.tolist())
    full, _ = oracle_within(sim.rates, users, torch.arange(sim.n_products).expand(32, -1), scheme)
    assert torch.equal(full, sim.oracle(users, scheme))
    few, few_gains = oracle_within(sim.rates, users[:1], torch.tensor([[3, -1, 5, -1, -1, -1]]), scheme)
    assert few[0, 2:].tolist() == [-1, -1, -1] and (few_gains[0, 2:] == 0).all()
