"""Each preference loss against a hand-computed value, and the implicit reward's link to the exact KL."""

from __future__ import annotations

import itertools
import math

import torch

from recsys_rl import slate
from recsys_rl.preference.losses import (
    banner_reward,
    dpo_loss,
    importance_weights,
    ipo_loss,
    item_reward,
    kto_balance,
    kto_loss,
    kto_reference_point,
    sdpo_loss,
)


def t(*x):
    return torch.tensor(x, dtype=torch.float64)


def test_dpo_is_minus_log_sigmoid_of_the_scaled_gap_minus_the_margin():
    terms = dpo_loss(t(1.0, 0.0), t(0.5, 0.25), beta=2.0)
    want = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))) / 2
    assert math.isclose(terms.loss.item(), want, rel_tol=1e-12)
    with_margin = dpo_loss(t(1.0), t(0.5), beta=2.0, margin=t(0.4))
    assert math.isclose(with_margin.loss.item(), math.log1p(math.exp(-0.6)), rel_tol=1e-12)
    m = terms.metrics()
    assert m["rewards/chosen"] == 1.0 and m["rewards/rejected"] == 0.75
    assert m["rewards/margins"] == 0.25 and m["rewards/accuracies"] == 0.5


def test_dpo_weights_average_the_examples():
    terms = dpo_loss(t(1.0, 0.0), t(0.5, 0.25), beta=2.0, weights=t(3.0, 1.0))
    want = (3 * math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))) / 4
    assert math.isclose(terms.loss.item(), want, rel_tol=1e-12)


def test_ipo_is_the_squared_distance_of_the_gap_to_one_over_two_beta():
    assert math.isclose(ipo_loss(t(1.0), t(0.5), beta=0.5).loss.item(), 0.25, rel_tol=1e-12)
    assert ipo_loss(t(1.5), t(0.5), beta=0.5).loss.item() == 0.0


def test_kto_weighs_desirable_and_undesirable_against_the_reference_point():
    terms = kto_loss(
        t(0.3, -0.2), torch.tensor([True, False]), t(0.1)[0], beta=1.0, lambda_d=2.0, lambda_u=1.0
    )
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    want = (2 * (1 - sig(0.2)) + (1 - sig(0.3))) / 2
    assert math.isclose(terms.loss.item(), want, rel_tol=1e-12)
    assert terms.chosen.tolist() == [0.3] and terms.rejected.tolist() == [-0.2]


def test_kto_reference_point_is_the_mismatched_mean_floored_at_zero_without_gradient():
    x = t(0.5, 1.5).requires_grad_()
    z0 = kto_reference_point(x)
    assert z0.item() == 1.0 and not z0.requires_grad
    assert kto_reference_point(t(-1.0, 0.5)).item() == 0.0


def test_kto_balance_makes_both_classes_weigh_the_same_in_total():
    lam_d, lam_u = kto_balance(10, 990)
    assert lam_d * 10 == lam_u * 990 and lam_u == 1.0


def test_sdpo_is_softplus_of_the_examination_weighted_logsumexp():
    terms = sdpo_loss(t(0.0), t(1.0, 2.0)[None], t(1.0, 0.5)[None], beta=1.0)
    want = math.log(1 + math.e + 0.5 * math.e**2)
    assert math.isclose(terms.loss.item(), want, rel_tol=1e-12)


def test_an_unexamined_slot_contributes_no_rejection():
    neg = t(1.0, 7.0)[None].requires_grad_()
    seen_only = sdpo_loss(t(0.0), neg, t(1.0, 0.0)[None], beta=1.0)
    seen_only.loss.backward()
    assert math.isclose(seen_only.loss.item(), math.log1p(math.e), rel_tol=1e-12)
    assert neg.grad[0, 1].item() == 0.0 and neg.grad[0, 0].item() > 0
    chosen = t(0.0, 0.0).requires_grad_()
    nothing_seen = sdpo_loss(
        chosen, t(1.0, 7.0, 1.0, 7.0).view(2, 2), t(0.0, 0.0, 1.0, 0.0).view(2, 2), beta=1.0
    )
    nothing_seen.loss.backward()
    assert math.isclose(nothing_seen.loss.item(), math.log1p(math.e) / 2, rel_tol=1e-12)
    assert (
        len(nothing_seen.rejected) == 1 and chosen.grad[0].item() == 0.0 and torch.isfinite(chosen.grad).all()
    )


def test_importance_weights_are_clipped_then_self_normalised():
    w = importance_weights(t(0.0, 0.0, 0.0).log1p(), torch.log(t(0.5, 2.0, 0.01)), clip=10.0)
    raw = [2.0, 0.5, 10.0]
    assert torch.allclose(w, t(*raw) / (sum(raw) / 3))


def test_the_implicit_reward_averaged_under_the_policy_is_the_exact_kl():
    """Enumerate every ordered banner of 2 out of 4 products: E_{a ~ pi}[r(x, a)] = KL(pi || ref), the
    per-position KL the engine reports (``slate.banner_terms``) averaged the same way."""
    g = torch.Generator().manual_seed(3)
    logits, ref = (
        torch.randn(1, 4, generator=g, dtype=torch.float64),
        torch.randn(1, 4, generator=g, dtype=torch.float64),
    )
    banners = torch.tensor(list(itertools.permutations(range(4), 2)))  # (12, 2)
    rows = torch.zeros(len(banners), dtype=torch.long)
    p = slate.log_prob(logits, banners, rows=rows).exp()
    assert math.isclose(p.sum().item(), 1.0, rel_tol=1e-12)
    r = banner_reward(logits.expand(12, -1), ref.expand(12, -1), banners)
    _, kl, _ = slate.banner_terms(logits, ref, banners, rows)
    assert math.isclose((p * r).sum().item(), (p * kl).sum().item(), rel_tol=1e-10)
    assert (p * r).sum().item() > 0


def test_item_rewards_of_one_context_differ_by_the_logit_differences():
    logits, ref = t(1.0, 2.0, 3.0)[None], t(0.0, 0.0, 1.0)[None]
    r = item_reward(logits, ref, torch.tensor([[0, 2]]))
    assert math.isclose((r[0, 1] - r[0, 0]).item(), (3.0 - 1.0) - (1.0 - 0.0), rel_tol=1e-12)


def test_unpaired_accuracy_is_the_share_of_desirable_undesirable_pairs_ranked_right():
    terms = kto_loss(
        t(0.3, -0.2, 0.1, 0.5),
        torch.tensor([True, False, False, True]),
        t(0.0)[0],
        beta=1.0,
        lambda_d=1.0,
        lambda_u=1.0,
    )
    m = terms.metrics()  # desirable 0.3, 0.5 against undesirable -0.2, 0.1: all four pairs right
    assert m["rewards/accuracies"] == 1.0 and math.isclose(m["rewards/margins"], 0.4 - (-0.05), rel_tol=1e-12)
