"""The KL-constrained policy-gradient objective: tensors in, scalars out, no I/O.

Maximise  E[reward] - beta * KL(pi_theta || pi_ref)  over banners, RLHF-style. Shapes: B banners,
each with a log-prob under the current policy (``logp``), under the policy that served it
(``logp_behaviour``), its advantage, its exact per-position KL to the reference summed over the
banner (``kl``), its per-position entropy summed (``entropy``), and the critic's value and return.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossTerms:
    total: torch.Tensor  # scalar to backprop
    policy: torch.Tensor  # clipped surrogate (to minimise)
    kl: torch.Tensor  # mean KL(pi || ref) per banner
    value: torch.Tensor  # critic MSE
    entropy: torch.Tensor  # mean per-banner entropy
    clip_frac: torch.Tensor  # share of banners whose ratio was clipped
    ratio_max: torch.Tensor


def ppo_kl_loss(
    logp: torch.Tensor,
    logp_behaviour: torch.Tensor,
    advantages: torch.Tensor,
    kl: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor,
    returns: torch.Tensor,
    *,
    beta: float,
    clip_eps: float,
    value_coef: float,
    entropy_coef: float,
) -> LossTerms:
    """PPO-clipped surrogate on the banner log-prob + beta*KL + value loss - entropy bonus.

    The ratio is against the logged behaviour propensity, so the same loss is off-policy-correct for
    banners served by an older version (live stream) or sampled by the current one (simulator).
    """
    ratio = torch.exp(logp - logp_behaviour)  # (B,)
    surrogate = torch.min(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages)
    policy_loss = -surrogate.mean()
    kl_mean = kl.mean()
    value_loss = (values - returns).pow(2).mean()
    ent = entropy.mean()
    total = policy_loss + beta * kl_mean + value_coef * value_loss - entropy_coef * ent
    clip_frac = ((ratio - 1).abs() > clip_eps).float().mean()
    return LossTerms(total, policy_loss, kl_mean, value_loss, ent, clip_frac, ratio.max().detach())


def reinforce_kl_loss(
    logp: torch.Tensor,
    rewards: torch.Tensor,
    logp_ref: torch.Tensor,
    baseline: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor,
    *,
    beta: float,
    value_coef: float,
    entropy_coef: float,
) -> LossTerms:
    """REINFORCE with the KL folded into the reward (TRL-style): r' = r - beta*(log pi - log ref).

    On-policy only: banners must have been sampled from the current policy. The critic (``values``)
    regresses on the raw reward so it can serve as ``baseline`` when there is one banner per context.
    """
    shaped = rewards - beta * (logp - logp_ref).detach()  # (B,)
    adv = shaped - baseline
    policy_loss = -(logp * adv.detach()).mean()
    kl_sample = (logp - logp_ref).detach().mean()
    ent = entropy.mean()
    value_loss = (values - rewards).pow(2).mean()
    total = policy_loss + value_coef * value_loss - entropy_coef * ent
    zero = torch.zeros((), dtype=logp.dtype)
    return LossTerms(total, policy_loss, kl_sample, value_loss, ent, zero, zero)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """(C, n) rewards of n banners per context -> (C, n) leave-one-out advantages.

    A_i = r_i - mean_{j != i} r_j: an unbiased baseline that needs no critic (n >= 2).
    """
    n = rewards.shape[1]
    return rewards - (rewards.sum(1, keepdim=True) - rewards) / (n - 1)


class AdaptiveKL:
    """Steers beta so the measured KL tracks a target (proportional controller, as in Ziegler et al.)."""

    def __init__(self, beta: float, target: float, horizon: int, adaptive: bool = True):
        self.beta, self.target, self.horizon, self.adaptive = beta, target, horizon, adaptive

    def update(self, kl: float, n_steps: int = 1) -> float:
        if self.adaptive:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.beta = max(self.beta * (1.0 + error * n_steps / self.horizon), 1e-6)
        return self.beta


def topk_offpolicy_loss(
    logp_item: torch.Tensor,
    behaviour_item_prob: torch.Tensor,
    advantages: torch.Tensor,
    kl: torch.Tensor,
    *,
    k: int,
    beta: float,
    weight_clip: float,
) -> LossTerms:
    """Off-policy slate gradient from logs (top-K off-policy correction, Chen et al. 2019) + beta*KL.

    logp_item (B, K): log softmax of the current policy at each logged item; behaviour_item_prob (B, K):
    probability the logging policy showed that item; advantages (B, K): per-position reward minus a
    baseline; kl (B,): exact KL to the reference along banners the current policy would draw.
    Item-level weights p/mu (clipped) replace the banner-level ratio, whose variance is unusable when the
    logging policy is far from the learner; lambda = K (1 - p)^(K-1) is d P(item in top-K) / d p.
    """
    p = logp_item.detach().exp()
    weight = (p / behaviour_item_prob).clamp(max=weight_clip)
    lam = k * (1 - p).pow(k - 1)
    policy_loss = -(weight * lam * advantages * logp_item).sum(-1).mean()
    kl_mean = kl.mean()
    zero = torch.zeros((), dtype=logp_item.dtype)
    clip_frac = (p / behaviour_item_prob > weight_clip).float().mean()
    return LossTerms(policy_loss + beta * kl_mean, policy_loss, kl_mean, zero, zero, clip_frac, weight.max())


def exposure_cap_penalty(
    items: torch.Tensor, examination: torch.Tensor, exposure: torch.Tensor, cap: float
) -> torch.Tensor:
    """(B,) the exposure term subtracted from each banner's reward (before the weight that scales it).

    items (B, K); examination (K,); exposure (N,) the products' served exposure so far. A product's
    excess is max(0, exposure_j / mean(exposure) - cap); a banner pays the examination-weighted sum of
    its products' excess, so putting an over-exposed product where it is looked at costs the most."""
    excess = (exposure / exposure.mean().clamp_min(1e-12) - cap).clamp_min(0.0).to(examination.dtype)
    return (excess[items] * examination[: items.shape[1]]).sum(-1)
