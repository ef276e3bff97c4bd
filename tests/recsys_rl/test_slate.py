import itertools
import math

import pytest
import torch

from recsys_rl import slate


def brute_force_banners(logits_row: torch.Tensor, k: int):
    """All ordered k-banners of a tiny catalogue with their exact PL probabilities."""
    n = logits_row.shape[0]
    w = logits_row.double().exp()
    out = {}
    for perm in itertools.permutations(range(n), k):
        p, left = 1.0, w.sum().item()
        for j in perm:
            p *= w[j].item() / left
            left -= w[j].item()
        out[perm] = p
    return out


def test_log_prob_matches_enumeration_and_sums_to_one():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, generator=g, dtype=torch.float64)
    for row in range(2):
        probs = brute_force_banners(logits[row], 3)
        assert math.isclose(sum(probs.values()), 1.0, rel_tol=1e-9)
        items = torch.tensor(list(probs.keys()))
        lp = slate.log_prob(logits[row].expand(len(items), -1), items)
        assert torch.allclose(lp.exp(), torch.tensor(list(probs.values()), dtype=torch.float64), atol=1e-12)


def test_gumbel_topk_samples_follow_plackett_luce():
    g = torch.Generator().manual_seed(1)
    logits = torch.tensor([[1.0, 0.5, 0.0, -0.5, -1.0]])
    probs = brute_force_banners(logits[0], 2)
    draws = slate.gumbel_topk(logits.expand(200_000, -1), 2, g)
    keys = draws[:, 0] * 5 + draws[:, 1]
    counts = torch.bincount(keys, minlength=25).double() / len(keys)
    for (a, b), p in probs.items():
        assert abs(counts[a * 5 + b].item() - p) < 4 * math.sqrt(p * (1 - p) / len(keys)) + 1e-4


def test_sampled_banners_have_no_repeats():
    g = torch.Generator().manual_seed(2)
    items = slate.gumbel_topk(torch.randn(500, 20, generator=g), 5, g)
    assert all(len(set(r)) == 5 for r in items.tolist())


def test_per_position_kl_is_exact_and_chains_to_banner_kl():
    g = torch.Generator().manual_seed(3)
    lp, lq = (
        torch.randn(1, 5, generator=g, dtype=torch.float64),
        torch.randn(1, 5, generator=g, dtype=torch.float64),
    )
    P, Q = brute_force_banners(lp[0], 3), brute_force_banners(lq[0], 3)
    banner_kl = sum(p * math.log(p / Q[a]) for a, p in P.items())
    items = torch.tensor(list(P.keys()))
    per_pos = slate.per_position_kl(lp.expand(len(items), -1), lq.expand(len(items), -1), items)
    weights = torch.tensor(list(P.values()), dtype=torch.float64)
    assert math.isclose((weights * per_pos.sum(-1)).sum().item(), banner_kl, rel_tol=1e-9)
    # first position is the plain softmax KL
    p0, q0 = lp[0].softmax(-1), lq[0].softmax(-1)
    assert math.isclose(per_pos[0, 0].item(), (p0 * (p0 / q0).log()).sum().item(), rel_tol=1e-9)


def test_kl_is_zero_when_policy_equals_reference():
    logits = torch.randn(4, 30)
    items = slate.gumbel_topk(logits, 5, torch.Generator().manual_seed(0))
    assert slate.per_position_kl(logits, logits.clone(), items).abs().max() < 1e-6


def test_per_position_entropy_chains_to_banner_entropy():
    lp = torch.randn(1, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    P = brute_force_banners(lp[0], 3)
    h = -sum(p * math.log(p) for p in P.values())
    items = torch.tensor(list(P.keys()))
    per_pos = slate.per_position_entropy(lp.expand(len(items), -1), items)
    weights = torch.tensor(list(P.values()), dtype=torch.float64)
    assert math.isclose((weights * per_pos.sum(-1)).sum().item(), h, rel_tol=1e-9)


def test_temperature_flattens_the_distribution():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    items = torch.tensor([[0, 1]])
    assert slate.log_prob(logits, items, temperature=5.0) < slate.log_prob(logits, items, temperature=1.0)


def test_banner_terms_equal_the_separate_functions_and_their_gradients():
    g = torch.Generator().manual_seed(5)
    lp = torch.randn(8, 12, generator=g, dtype=torch.float64, requires_grad=True)
    lq = torch.randn(8, 12, generator=g, dtype=torch.float64)
    items = slate.gumbel_topk(lp.detach(), 5, g)
    logp, kl, ent = slate.banner_terms(lp, lq, items)
    assert torch.allclose(logp, slate.log_prob(lp, items))
    assert torch.allclose(kl, slate.per_position_kl(lp, lq, items).sum(-1))
    assert torch.allclose(ent, slate.per_position_entropy(lp, items).sum(-1))
    (g1,) = torch.autograd.grad((logp + kl + ent).sum(), lp)
    ref = slate.log_prob(lp, items) + slate.per_position_kl(lp, lq, items).sum(-1)
    (g2,) = torch.autograd.grad((ref + slate.per_position_entropy(lp, items).sum(-1)).sum(), lp)
    assert torch.allclose(g1, g2)


def test_banner_terms_share_context_rows():
    g = torch.Generator().manual_seed(6)
    lp, lq = torch.randn(3, 9, generator=g), torch.randn(3, 9, generator=g)
    rows = torch.tensor([0, 0, 1, 1, 2, 2])
    items = slate.gumbel_topk(lp[rows], 5, g)
    shared = slate.banner_terms(lp, lq, items, rows)
    expanded = slate.banner_terms(lp[rows], lq[rows], items)
    for a, b in zip(shared, expanded, strict=False):
        assert torch.allclose(a, b, atol=1e-5)


def test_banner_terms_stay_exact_for_a_peaked_policy():
    """Nearly all mass on the first items: removing it must not cancel catastrophically."""
    lp = torch.tensor([[30.0, 25.0, 0.0, -1.0, -2.0, -3.0]])
    lq = torch.zeros(1, 6)
    items = torch.tensor([[0, 1, 2]])
    _logp, kl, ent = slate.banner_terms(lp, lq, items)
    assert torch.allclose(
        kl, slate.per_position_kl(lp.double(), lq.double(), items).sum(-1).float(), rtol=1e-4
    )
    assert torch.allclose(
        ent, slate.per_position_entropy(lp.double(), items).sum(-1).float(), rtol=1e-4, atol=1e-6
    )


def test_log_prob_matches_masked_softmax_even_when_peaked():
    lp = torch.tensor([[40.0, 30.0, 0.0, -1.0, -2.0, -3.0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    items = torch.tensor([[0, 1, 2], [5, 0, 3]])
    exact = slate.position_log_probs(lp.double(), items).sum(-1)
    assert torch.allclose(slate.log_prob(lp, items).double(), exact, rtol=1e-5)


def _enumerated_pl(logits_row: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(every ordered k-banner (P, k), its PL probability (P,)), vectorised over the P banners."""
    perms = torch.tensor(list(itertools.permutations(range(logits_row.shape[0]), k)))
    w = logits_row.double().exp()[perms]  # (P, k)
    left = logits_row.double().exp().sum() - (w.cumsum(1) - w)  # mass not yet placed at each position
    return perms, (w / left).prod(1)


@pytest.mark.parametrize("n, k", [(6, 1), (7, 3), (8, 8), (11, 2)])
def test_log_prob_matches_enumeration_for_any_banner_size(n, k):
    logits = torch.randn(n, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    perms, probs = _enumerated_pl(logits, k)
    assert math.isclose(probs.sum().item(), 1.0, rel_tol=1e-9)
    lp = slate.log_prob(logits.expand(len(perms), -1), perms)
    assert torch.allclose(lp.exp(), probs, atol=1e-12, rtol=1e-9)
    # the per-position form and the restricted (candidate) form agree with it too
    m = min(50, len(perms))
    assert torch.allclose(slate.position_log_probs(logits.expand(m, -1), perms[:m]).sum(-1), lp[:m])
    ids = torch.arange(n).flip(0).expand(len(perms), -1)  # candidates in another order
    cand = logits.flip(0).expand(len(perms), -1)
    rlp, _, _ = slate.restricted_terms(cand, cand, ids, perms)
    assert torch.allclose(rlp.double(), lp, atol=1e-9)


@pytest.mark.parametrize("k", [3, 8])
def test_gumbel_topk_draws_follow_plackett_luce_for_k(k):
    logits = torch.randn(9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    draws = slate.gumbel_topk(logits.expand(200_000, -1), k, torch.Generator().manual_seed(2))
    assert draws.shape == (200_000, k)
    # first-position and k-th position frequencies against the exact PL marginals
    perms, probs = _enumerated_pl(logits, k)
    for pos in (0, k - 1):
        exact = torch.zeros(9, dtype=torch.float64).index_add_(0, perms[:, pos], probs)
        freq = torch.bincount(draws[:, pos], minlength=9).double() / len(draws)
        assert (freq - exact).abs().max() < 5 * (exact * (1 - exact) / len(draws)).sqrt().max() + 1e-4
