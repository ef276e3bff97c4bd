import itertools
import math

import pytest
import torch

from recsys_rl import slate
from recsys_rl.config import load_reward
from recsys_rl.reward_model.best_of_n import best_of_n, best_of_n_kl, n_for_kl
from recsys_rl.reward_model.scoring import banner_rewards
from tests.recsys_rl.reward_model.helpers import contexts, known_model

N = 7  # 7 * 6 * 5 * 4 * 3 = 2520 ordered banners: small enough to enumerate


def _enumerate(logits: torch.Tensor, model, scheme):
    """Every ordered banner, its reference probability and its reward-model score (sorted by score)."""
    banners = torch.tensor(list(itertools.permutations(range(N), 5)))
    p = slate.log_prob(logits.expand(len(banners), -1).double(), banners).exp()
    ctx = contexts(1, N)
    r = banner_rewards(model, scheme, ctx, banners, torch.zeros(len(banners), dtype=torch.long))
    order = r.argsort()
    return banners[order], p[order] / p.sum(), r[order]


def _bon_distribution(p: torch.Tensor, n: int) -> torch.Tensor:
    """P(best of n draws is banner i) for banners sorted by score with distinct scores: F_i^n - F_{i-1}^n."""
    cdf = p.cumsum(0)
    return cdf.pow(n) - torch.cat([cdf.new_zeros(1), cdf[:-1]]).pow(n)


@pytest.fixture(scope="module")
def world():
    bias = torch.randn(N, generator=torch.Generator().manual_seed(0))
    model = known_model(N, bias, exam=(1.0, 0.71, 0.53, 0.37, 0.29)).double()  # float64: no tied scores
    return model, load_reward("ctr")


@pytest.mark.parametrize("n", [1, 2, 4, 16, 64])
def test_analytic_kl_matches_enumeration_for_distinct_draws(world, n):
    model, scheme = world
    _, p, r = _enumerate(torch.zeros(1, N), model, scheme)  # uniform reference: each banner 1/2520
    assert r.diff().min() > 0  # distinct scores
    q = _bon_distribution(p, n)
    exact = float((q * (q.clamp_min(1e-300) / p).log()).sum())
    assert exact == pytest.approx(best_of_n_kl(n), abs=0.02 * max(1.0, best_of_n_kl(n)))
    assert exact <= best_of_n_kl(n) + 1e-9  # the formula is an upper bound when draws can coincide


def test_analytic_kl_bounds_a_peaked_reference(world):
    model, scheme = world
    _, p, _ = _enumerate(torch.linspace(3.0, -3.0, N).unsqueeze(0), model, scheme)
    for n in (2, 8, 32):
        q = _bon_distribution(p, n)
        assert float((q * (q.clamp_min(1e-300) / p).log()).sum()) <= best_of_n_kl(n) + 1e-9


def test_best_of_n_sampler_has_the_enumerated_expected_score(world):
    model, scheme = world
    logits = torch.linspace(1.0, -1.0, N).unsqueeze(0)
    _, p, r = _enumerate(logits, model, scheme)
    n, m = 8, 40_000
    exact = float((_bon_distribution(p, n) * r).sum())
    ctx = contexts(m, N)
    _, scores = best_of_n(
        lambda c: logits.expand(len(c), -1), model, scheme, ctx, n, torch.Generator().manual_seed(0)
    )
    se = float(scores.std()) / math.sqrt(m)
    assert abs(float(scores.mean()) - exact) < 4 * se
    assert float(scores.mean()) > float((p * r).sum())  # better than one reference draw


def test_n_for_kl_inverts_the_formula():
    assert n_for_kl(0.0) == 1
    assert [n_for_kl(best_of_n_kl(n)) for n in (2, 5, 20, 300)] == [2, 5, 20, 300]
    # a widened sweep asks for huge budgets: answered at once (n ~ e^(kl + 1)), not by counting to it
    n = n_for_kl(32.0)
    assert best_of_n_kl(n - 1) <= 32.0 <= best_of_n_kl(n + 1) and n > 10**14
    with pytest.raises(ValueError, match="n: must be >= 1"):
        best_of_n_kl(0)
