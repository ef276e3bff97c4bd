"""The policy over its candidates: restricted log-prob, KL and entropy against enumeration."""

import itertools
import math

import torch

from recsys_rl import slate


def pl_prob(weights: dict[int, float], banner) -> float:
    p, left = 1.0, sum(weights.values())
    for j in banner:
        p *= weights[j] / left
        left -= weights[j]
    return p


def test_restricted_terms_match_enumeration_over_candidates():
    g = torch.Generator().manual_seed(3)
    n, k = 9, 3
    s = torch.randn(n, generator=g, dtype=torch.float64)  # policy logits over the whole catalogue
    r = torch.randn(n, generator=g, dtype=torch.float64)  # reference logits
    cand = torch.tensor([7, 2, 5, 0, 4])  # the policy's candidates (any order)
    w = {int(j): math.exp(s[j]) for j in cand}
    wr = {int(j): math.exp(r[j]) for j in cand}  # reference renormalised over the same candidates
    banners = list(itertools.permutations(cand.tolist(), k))
    items = torch.tensor(banners)
    cl, rl = s[cand].expand(len(items), -1), r[cand].expand(len(items), -1)
    logp, kl, ent = slate.restricted_terms(cl, rl, cand.expand(len(items), -1), items)
    p = torch.tensor([pl_prob(w, b) for b in banners], dtype=torch.float64)
    q = torch.tensor([pl_prob(wr, b) for b in banners], dtype=torch.float64)
    assert math.isclose(p.sum().item(), 1.0, rel_tol=1e-12)
    assert torch.allclose(logp.exp(), p, atol=1e-12)
    # per-position KL / entropy along a banner, averaged under P, are the whole-banner KL / entropy
    assert math.isclose((p * kl).sum().item(), (p * (p / q).log()).sum().item(), rel_tol=1e-9)
    assert math.isclose((p * ent).sum().item(), -(p * p.log()).sum().item(), rel_tol=1e-9)
    # the full-catalogue KL to the unrestricted reference is this plus the reference's missing mass
    full_q = torch.tensor(
        [pl_prob({j: math.exp(r[j]) for j in range(n)}, b) for b in banners], dtype=torch.float64
    )
    full_kl = (p * (p / full_q).log()).sum().item()
    assert full_kl >= (p * kl).sum().item()


def test_restricted_log_prob_of_a_non_candidate_is_minus_inf():
    cand = torch.tensor([[3, 1, 4, 0]])
    logits = torch.zeros(1, 4)
    logp, _, _ = slate.restricted_terms(logits, logits, cand, torch.tensor([[3, 2]]))
    assert logp.item() == float("-inf")


def test_restricted_sample_follows_pl_over_candidates():
    g = torch.Generator().manual_seed(1)
    cand = torch.tensor([[10, 20, 30, 40]])
    logits = torch.tensor([[1.0, 0.0, -1.0, 0.5]])
    items, lp = slate.restricted_sample(logits.expand(100_000, -1), cand.expand(100_000, -1), 2, g)
    assert set(items.unique().tolist()) <= {10, 20, 30, 40}
    w = dict(zip([10, 20, 30, 40], logits[0].exp().tolist(), strict=True))
    first = (items[:, 0] == 10) & (items[:, 1] == 40)
    assert abs(first.float().mean().item() - pl_prob(w, (10, 40))) < 0.005
    assert torch.allclose(lp[first][0].exp(), torch.tensor(pl_prob(w, (10, 40))), atol=1e-6)


def test_with_banner_adds_missing_items_once():
    cand = torch.tensor([[5, 6, 7]])
    ids, valid = slate.with_banner(cand, torch.tensor([[6, 9, 9, 2]]))
    assert ids.tolist() == [[5, 6, 7, 6, 9, 9, 2]]
    assert valid.tolist() == [[True, True, True, False, True, False, True]]
    logits = torch.tensor([[0.0, 1.0, 2.0, 1.0, 0.5, 0.5, -1.0]]).masked_fill(~valid, slate.PAD_LOGIT)
    logp, kl, ent = slate.restricted_terms(logits, logits, ids, torch.tensor([[9, 2]]))
    w = {5: 1.0, 6: math.e, 7: math.e**2, 9: math.exp(0.5), 2: math.exp(-1)}
    assert math.isclose(logp.exp().item(), pl_prob(w, (9, 2)), rel_tol=1e-6)
    assert abs(kl.item()) < 1e-6 and math.isfinite(ent.item())


def test_grouped_sample_draws_what_repeated_rows_draw_and_hands_on_positions():
    g = torch.Generator().manual_seed(4)
    c, m, group = 6, 40, 3
    logits = torch.randn(c, m, generator=g) * 2
    ids = torch.randperm(1000, generator=g)[: c * m].view(c, m)
    items, lp, pos = slate.restricted_sample_groups(
        logits, ids, 5, group, torch.Generator().manual_seed(9), 0.7
    )
    rep_items, rep_lp = slate.restricted_sample(
        logits.repeat_interleave(group, 0),
        ids.repeat_interleave(group, 0),
        5,
        torch.Generator().manual_seed(9),
        0.7,
    )
    assert torch.equal(items, rep_items) and torch.equal(lp, rep_lp)
    assert torch.equal(pos, slate.candidate_positions(ids.repeat_interleave(group, 0), items))


def test_log_prob_with_rows_equals_log_prob_of_the_repeated_rows():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 30, generator=g)
    logits[1, :5] = 60.0  # a row whose first items hold nearly all the mass: the fragile branch
    rows = torch.tensor([0, 1, 1, 3, 2, 1])
    items = torch.stack([torch.randperm(30, generator=g)[:5] for _ in rows])
    items[1] = torch.tensor([0, 1, 2, 3, 9])
    assert torch.equal(slate.log_prob(logits, items, 1.3, rows), slate.log_prob(logits[rows], items, 1.3))
