import math

import pytest
import torch

from recsys_rl import slate
from recsys_rl.objective import AdaptiveKL, ppo_kl_loss, reinforce_kl_loss, rloo_advantages
from tests.recsys_rl.test_slate import brute_force_banners

KW = {"beta": 0.0, "clip_eps": 0.2, "value_coef": 0.0, "entropy_coef": 0.0}


def _zeros(n):
    return torch.zeros(n)


def test_policy_gradient_matches_brute_force_expected_reward_gradient():
    """On-policy, unclipped: grad of the surrogate = -grad E_pi[A] computed by enumerating banners."""
    torch.manual_seed(0)
    logits = torch.randn(1, 5, dtype=torch.float64, requires_grad=True)
    probs = brute_force_banners(logits[0].detach(), 2)
    items = torch.tensor(list(probs.keys()))
    adv = torch.randn(len(items), dtype=torch.float64)
    p = torch.tensor(list(probs.values()), dtype=torch.float64)
    lp = slate.log_prob(logits.expand(len(items), -1), items)
    # exact expectation as a weighted sum over every banner: weights p(a), ratio = 1 at theta
    ratio = torch.exp(lp - lp.detach())
    surrogate = -(p * ratio * adv).sum()
    (g_loss,) = torch.autograd.grad(surrogate, logits, retain_graph=True)
    exact = -(lp.exp() * adv).sum()
    (g_exact,) = torch.autograd.grad(exact, logits)
    assert torch.allclose(g_loss, g_exact, atol=1e-12)


def test_clip_bounds_the_update():
    logp_b = torch.zeros(3)
    adv = torch.tensor([1.0, 1.0, -1.0])
    logp = torch.tensor([0.5, 0.05, -0.5], requires_grad=True)  # ratios 1.65 (clipped), 1.05, 0.61 (clipped)
    t = ppo_kl_loss(logp, logp_b, adv, _zeros(3), _zeros(3), _zeros(3), _zeros(3), **KW)
    t.total.backward()
    assert logp.grad[0] == 0 and logp.grad[2] == 0 and logp.grad[1] != 0
    assert abs(t.clip_frac.item() - 2 / 3) < 1e-6
    assert abs(t.policy.item() - (-(1.2 + math.exp(0.05) - 0.8) / 3)) < 1e-6


def test_kl_and_value_and_entropy_terms_enter_with_their_coefficients():
    z = torch.zeros(4)
    kl, ent = torch.full((4,), 2.0), torch.full((4,), 3.0)
    values, returns = torch.ones(4), torch.full((4,), 3.0)
    t = ppo_kl_loss(
        z, z, z, kl, ent, values, returns, beta=0.5, clip_eps=0.2, value_coef=0.25, entropy_coef=0.1
    )
    assert abs(t.total.item() - (0.5 * 2.0 + 0.25 * 4.0 - 0.1 * 3.0)) < 1e-6


def test_rloo_advantages_leave_one_out():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.allclose(rloo_advantages(r), torch.tensor([[1 - 2.5, 2 - 2.0, 3 - 1.5]]))


def test_reinforce_folds_kl_into_reward():
    logp = torch.tensor([-1.0], requires_grad=True)
    t = reinforce_kl_loss(
        logp,
        torch.tensor([2.0]),
        torch.tensor([-3.0]),
        torch.tensor([0.0]),
        _zeros(1),
        torch.tensor([2.0]),
        beta=0.5,
        value_coef=0.5,
        entropy_coef=0.0,
    )
    t.total.backward()
    assert abs(logp.grad.item() - (-(2.0 - 0.5 * 2.0))) < 1e-6  # shaped reward 1.0, loss = -logp * 1.0
    assert abs(t.kl.item() - 2.0) < 1e-6


def test_adaptive_beta_moves_toward_target():
    ctl = AdaptiveKL(beta=0.1, target=1.0, horizon=10)
    assert ctl.update(3.0) > 0.1  # KL too high -> stronger penalty
    ctl2 = AdaptiveKL(beta=0.1, target=1.0, horizon=10)
    assert ctl2.update(0.2) < 0.1
    fixed = AdaptiveKL(beta=0.1, target=1.0, horizon=10, adaptive=False)
    assert fixed.update(3.0) == 0.1


def test_the_exposure_cap_charges_banners_for_over_exposed_products_where_they_are_examined():
    from recsys_rl.objective import exposure_cap_penalty

    exposure = torch.tensor([6.0, 1.0, 1.0, 0.0])  # mean 2: product 0 at 3x the mean
    exam = torch.tensor([1.0, 0.5])
    pen = exposure_cap_penalty(torch.tensor([[0, 1], [1, 0], [2, 3]]), exam, exposure, cap=2.0)
    assert pen.tolist() == pytest.approx([1.0, 0.5, 0.0])  # excess of product 0: 3 - 2
