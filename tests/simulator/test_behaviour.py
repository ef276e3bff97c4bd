"""The popularity behaviour policy: exact ordered-banner propensities that match its sampling."""

import itertools

import pytest
import torch

from recsys_rl.records import ContextBatch
from simulator.behaviour import PopularityBehaviour

POP7 = torch.tensor([5.0, 3.0, 2.0, 1.0, 1.0, 0.5, 0.2])
PERMS = torch.tensor(list(itertools.permutations(range(7), 5)))  # all 2520 ordered banners


def _plackett_luce(pop: torch.Tensor, banner: list[int]) -> float:
    """Hand-written sequential probability of an ordered banner."""
    w = pop.double().tolist()
    left, p = sum(w), 1.0
    for j in banner:
        p *= w[j] / left
        left -= w[j]
    return p


@pytest.mark.parametrize("alpha", [1.0, 0.5, 3.0])
def test_propensities_sum_to_one_over_all_ordered_banners(alpha):
    policy = PopularityBehaviour(POP7, alpha=alpha)
    total = policy.log_prob(PERMS).double().exp().sum().item()
    assert abs(total - 1) < 1e-5


def test_propensity_equals_sequential_plackett_luce():
    policy = PopularityBehaviour(POP7)
    for banner in PERMS[::97].tolist():
        got = policy.log_prob(torch.tensor([banner])).exp().item()
        assert got == pytest.approx(_plackett_luce(POP7, banner), rel=1e-5)


@pytest.mark.parametrize("alpha", [1.0, 6.0])  # 6.0 puts 95% of the mass on one product
def test_sampled_banner_frequencies_match_propensities(alpha):
    policy = PopularityBehaviour(POP7, alpha=alpha)
    n = 300_000
    banners = policy.sample(n, torch.Generator().manual_seed(4))
    assert (banners.items.sort(1).values.diff(dim=1) > 0).all()
    assert torch.allclose(banners.log_prob, policy.log_prob(banners.items))
    code = (banners.items * 7 ** torch.arange(5)).sum(1)  # each ordered banner as one integer
    counts = torch.bincount(code, minlength=7**5).double()
    expected = policy.log_prob(PERMS).double().exp() * n
    observed = counts[(PERMS * 7 ** torch.arange(5)).sum(1)]
    assert observed.sum() == n  # nothing outside the enumerated banners
    big = expected >= 5
    rest_obs, rest_exp = observed[~big].sum(), expected[~big].sum()
    chi2 = (((observed[big] - expected[big]) ** 2) / expected[big]).sum()
    if rest_exp >= 5:
        chi2 += (rest_obs - rest_exp) ** 2 / rest_exp
    df = int(big.sum()) + int(rest_exp >= 5) - 1
    assert chi2 < df + 5 * (2 * df) ** 0.5, (chi2.item(), df)


def test_sampling_is_seeded_and_takes_contexts():
    policy = PopularityBehaviour(torch.rand(50) + 0.1)
    ctx = ContextBatch(torch.zeros(100, dtype=torch.long), torch.full((100, 10), -1))
    a = policy.sample(ctx, torch.Generator().manual_seed(1))
    b = policy.sample(ctx, torch.Generator().manual_seed(1))
    c = policy.sample(ctx, torch.Generator().manual_seed(2))
    assert torch.equal(a.items, b.items) and not torch.equal(a.items, c.items)
    assert a.items.shape == (100, 5) and a.log_prob.shape == (100,)


def test_rejects_zero_popularity():
    with pytest.raises(ValueError, match="popularity"):
        PopularityBehaviour(torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 1.0]))
