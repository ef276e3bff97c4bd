"""Behaviour policies (popularity; recommender with epsilon-uniform exploration): exact ordered-banner
propensities that match their sampling, and per-position marginals."""

import itertools
import math

import numpy as np
import pytest
import torch

from recsys_rl.ope.marginals import exact_marginals, marginals_of
from recsys_rl.records import ContextBatch
from simulator.behaviour import ExploringBehaviour, PopularityBehaviour

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


# --- the reference recommender with epsilon-uniform exploration -------------------------------------

LOGITS7 = torch.tensor(  # per viewed product (3 contexts kinds) over a 7-product catalogue
    [[2.0, 1.0, 0.5, 0.0, -1.0, -2.0, -4.0], [-3.0, 0.0, 0.0, 1.5, 0.2, 2.5, -1.0], [0.0] * 7]
)


def _ctx(viewed: list[int]) -> ContextBatch:
    v = torch.tensor(viewed)
    return ContextBatch(v, torch.full((len(v), 10), -1))


def _logits7(ctx: ContextBatch) -> torch.Tensor:
    return LOGITS7[ctx.viewed]


def _mixture(view: int, banner: list[int], eps: float) -> float:
    """Hand-written (1 - eps) * sequential Plackett-Luce + eps / (number of ordered banners)."""
    return (1 - eps) * _plackett_luce(LOGITS7[view].double().exp(), banner) + eps / len(PERMS)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5, 1.0])
def test_exploring_log_propensity_is_the_exact_mixture_probability(eps):
    policy = ExploringBehaviour(_logits7, 7, eps)
    for view in range(3):
        ctx = _ctx([view] * len(PERMS))
        lp = policy.log_prob(ctx, PERMS)
        assert lp.dtype == torch.float64
        assert abs(lp.exp().sum().item() - 1) < 1e-9
        for i in range(0, len(PERMS), 53):
            assert lp[i].exp().item() == pytest.approx(_mixture(view, PERMS[i].tolist(), eps), rel=1e-9)


def test_exploring_floor_survives_a_peaked_recommender():
    """Where the recommender puts ~0 mass, the propensity is eps / #banners, not 0 or NaN."""
    peaked = lambda ctx: torch.tensor([[300.0, 200.0, 100.0, 50.0, 25.0, -300.0, -300.0]]).expand(len(ctx), 7)  # noqa: E731
    policy = ExploringBehaviour(peaked, 7, 0.05)
    lp = policy.log_prob(_ctx([0]), torch.tensor([[6, 5, 4, 3, 2]]))
    assert lp.item() == pytest.approx(math.log(0.05 / 2520), rel=1e-12)


@pytest.mark.parametrize("eps", [0.2, 0.9])
def test_exploring_sampled_frequencies_match_propensities(eps):
    policy = ExploringBehaviour(_logits7, 7, eps)
    n = 300_000
    ctx = _ctx([1] * n)
    banners = policy.sample(ctx, torch.Generator().manual_seed(5))
    assert (banners.items.sort(1).values.diff(dim=1) > 0).all()
    assert torch.allclose(banners.log_prob.double(), policy.log_prob(ctx, banners.items), rtol=1e-6)
    code = (banners.items * 7 ** torch.arange(5)).sum(1)
    counts = torch.bincount(code, minlength=7**5).double()
    observed = counts[(PERMS * 7 ** torch.arange(5)).sum(1)]
    expected = policy.log_prob(_ctx([1] * len(PERMS)), PERMS).exp() * n
    assert observed.sum() == n
    big = expected >= 5
    chi2 = (((observed[big] - expected[big]) ** 2) / expected[big]).sum()
    rest_obs, rest_exp = observed[~big].sum(), expected[~big].sum()
    if rest_exp >= 5:
        chi2 += (rest_obs - rest_exp) ** 2 / rest_exp
    df = int(big.sum()) + int(rest_exp >= 5) - 1
    assert chi2 < df + 5 * (2 * df) ** 0.5, (chi2.item(), df)


def test_exploring_sampling_is_seeded_contextual_and_blocked():
    n_items = 50
    table = torch.randn(n_items, n_items) * 3
    policy = ExploringBehaviour(lambda ctx: table[ctx.viewed], n_items, 0.1)
    ctx = _ctx(torch.randint(0, n_items, (3000,)).tolist())
    a = policy.sample(ctx, torch.Generator().manual_seed(1))
    b = policy.sample(ctx, torch.Generator().manual_seed(1))
    c = policy.sample(ctx, torch.Generator().manual_seed(2))
    assert torch.equal(a.items, b.items) and torch.equal(a.log_prob, b.log_prob)
    assert not torch.equal(a.items, c.items)
    assert a.items.shape == (3000, 5) and a.log_prob.shape == (3000,)
    assert torch.allclose(a.log_prob.double(), policy.log_prob(ctx, a.items), rtol=1e-6)
    # block boundaries change nothing but the memory used
    import simulator.behaviour as behaviour

    old, behaviour._BLOCK_ELEMS = behaviour._BLOCK_ELEMS, 7 * n_items
    try:
        d = policy.sample(ctx, torch.Generator().manual_seed(1))
    finally:
        behaviour._BLOCK_ELEMS = old
    assert d.items.shape == a.items.shape and torch.allclose(
        d.log_prob.double(), policy.log_prob(ctx, d.items)
    )


def test_exploring_top_slot_follows_the_context():
    """About (1 - eps) of banners lead with the recommender's favourite for that context."""
    policy = ExploringBehaviour(lambda ctx: 20.0 * torch.eye(7)[ctx.viewed], 7, 0.25)
    ctx = _ctx([i % 7 for i in range(20_000)])
    items = policy.sample(ctx, torch.Generator().manual_seed(0)).items
    share = (items[:, 0] == ctx.viewed).double().mean().item()
    assert share == pytest.approx(0.75 + 0.25 / 7, abs=0.01)


def test_exploring_position_marginals_exact_on_a_small_catalogue():
    eps = 0.3
    policy = ExploringBehaviour(_logits7, 7, eps)
    for view in range(3):
        probs = policy.log_prob(_ctx([view] * len(PERMS)), PERMS).exp()
        brute = torch.zeros(5, 7, dtype=torch.float64)  # P(product j at position k) by enumeration
        for k in range(5):
            brute[k].index_add_(0, PERMS[:, k], probs)
        got = policy.position_marginals(
            _ctx([view] * 4), PERMS[:4], n_samples=8, generator=np.random.default_rng(0)
        )
        want = brute[torch.arange(5), PERMS[:4]].numpy()
        np.testing.assert_allclose(got, want, rtol=1e-9)
        assert (got >= eps / 7).all()


def test_exploring_position_marginals_sampled_for_big_catalogues_are_unbiased():
    """Past 12 products the PL marginals are Rao-Blackwellised samples: their mean is the exact marginal."""
    n_items, eps = 13, 0.1
    s = torch.randn(1, n_items, generator=torch.Generator().manual_seed(3)) * 1.5
    policy = ExploringBehaviour(lambda ctx: s.expand(len(ctx), n_items), n_items, eps)
    banner = torch.tensor([[0, 1, 2, 3, 4]])
    exact = (1 - eps) * marginals_of(
        banner, exact_marginals(s.double(), 5, max_items=n_items)
    ) + eps / n_items
    reps = 4000
    got = policy.position_marginals(
        _ctx([0] * reps), banner.expand(reps, 5), n_samples=4, generator=np.random.default_rng(1)
    )
    se = got.std(axis=0) / reps**0.5
    assert (np.abs(got.mean(axis=0) - exact[0]) < 4 * se + 1e-12).all(), (got.mean(axis=0), exact[0], se)
    assert got[:, 0].std() < 1e-12  # the top slot has no prefix: exact in every sample


def test_exploring_rejects_bad_arguments():
    with pytest.raises(ValueError, match="epsilon"):
        ExploringBehaviour(_logits7, 7, 1.5)
    with pytest.raises(ValueError, match="n_products"):
        ExploringBehaviour(_logits7, 4, 0.1)
    with pytest.raises(ValueError, match="logits_fn"):
        ExploringBehaviour(_logits7, 8, 0.1).sample(_ctx([0, 1]), torch.Generator().manual_seed(0))
