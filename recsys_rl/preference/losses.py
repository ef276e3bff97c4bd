"""Preference losses over Plackett–Luce banners: tensors in, scalars out, no I/O.

The implicit reward of a banner a = (a_1..a_K) in context x is
    r(x, a) = sum_k [log pi_theta(a_k | x, a_<k) - log pi_ref(a_k | x, a_<k)] = log pi_theta(a|x) - log pi_ref(a|x),
whose expectation under pi_theta is KL(pi_theta || pi_ref), the KL the engine reports. Item level
(one product i of a banner, the first-position softmax), r(x, i) = log pi_theta(i|x) - log pi_ref(i|x);
within one context the normalisers cancel in any difference r(x, i) - r(x, j).

Every loss takes implicit rewards (not yet multiplied by beta) and optional per-example weights
(importance weights pi_ref / mu, see ``importance_weights``); shapes: P preference examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from recsys_rl import slate


@dataclass
class PreferenceTerms:
    """loss: scalar to backprop; chosen, rejected: implicit rewards times beta (TRL's rewards/chosen and
    rewards/rejected, detached): (P,) each when ``paired``, else the desirable and the undesirable
    examples of an unpaired batch (KTO), of any sizes."""

    loss: torch.Tensor
    chosen: torch.Tensor
    rejected: torch.Tensor
    paired: bool = True

    def metrics(self) -> dict[str, float]:
        """TRL's preference metrics: rewards/chosen, /rejected, /margins (batch means) and /accuracies:
        the share of pairs ranked right (unpaired: of all desirable x undesirable pairs)."""
        if self.paired:
            right = (self.chosen > self.rejected).float().mean()
        else:
            right = (self.chosen[:, None] > self.rejected[None, :]).float().mean()
        return {
            "loss": self.loss.item(),
            "rewards/chosen": self.chosen.mean().item(),
            "rewards/rejected": self.rejected.mean().item(),
            "rewards/margins": (self.chosen.mean() - self.rejected.mean()).item(),
            "rewards/accuracies": right.item(),
        }


def banner_reward(logits: torch.Tensor, ref_logits: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(B,) implicit reward of banners items (B, K) under logits, ref_logits (B, N): the Plackett–Luce
    per-position log-probs of the policy minus the reference's, summed over positions."""
    return slate.log_prob(logits, items) - slate.log_prob(ref_logits, items).detach()


def item_reward(logits: torch.Tensor, ref_logits: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(B, J) item-level implicit reward of products items (B, J): first-position log-softmax of the
    policy minus the reference's."""
    lp = torch.log_softmax(logits, -1).gather(1, items)
    lr = torch.log_softmax(ref_logits, -1).gather(1, items)
    return lp - lr.detach()


def _mean(losses: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    return losses.mean() if weights is None else (weights * losses).sum() / weights.sum().clamp_min(1e-12)


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    *,
    beta: float,
    margin: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> PreferenceTerms:
    """DPO (Rafailov et al. 2023): -log sigmoid(beta (r_w - r_l) - margin). chosen, rejected: (P,)
    implicit rewards; margin (P,): e.g. proportional to the grade difference (0 by default)."""
    logits = beta * (chosen - rejected) - (0.0 if margin is None else margin)
    return PreferenceTerms(
        _mean(-F.logsigmoid(logits), weights), beta * chosen.detach(), beta * rejected.detach()
    )


def ipo_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, *, beta: float, weights: torch.Tensor | None = None
) -> PreferenceTerms:
    """IPO (Azar et al. 2023): (r_w - r_l - 1 / (2 beta))^2, a squared loss that stops pushing once the
    log-ratio gap reaches 1/(2 beta), so it cannot run off to infinite KL on deterministic preferences."""
    losses = (chosen - rejected - 1.0 / (2.0 * beta)).pow(2)
    return PreferenceTerms(_mean(losses, weights), beta * chosen.detach(), beta * rejected.detach())


def kto_reference_point(mismatched: torch.Tensor) -> torch.Tensor:
    """z0 of KTO (Ethayarajh et al. 2024): the batch mean of implicit rewards of mismatched pairs
    (a banner scored in another example's context), floored at 0 and detached: an estimate of
    KL(pi_theta || pi_ref) that carries no gradient."""
    return mismatched.detach().mean().clamp_min(0.0)


def kto_balance(n_desirable: int, n_undesirable: int) -> tuple[float, float]:
    """(lambda_D, lambda_U) with lambda_D n_D = lambda_U n_U and lambda_U = 1: the rare desirable class
    (a purchase among thousands of ignored banners) weighs as much in total as the common one."""
    return n_undesirable / max(n_desirable, 1), 1.0


def kto_loss(
    rewards: torch.Tensor,
    desirable: torch.Tensor,
    z0: torch.Tensor,
    *,
    beta: float,
    lambda_d: float,
    lambda_u: float,
    weights: torch.Tensor | None = None,
) -> PreferenceTerms:
    """KTO: lambda_D (1 - sigmoid(beta (r - z0))) for desirable, lambda_U (1 - sigmoid(beta (z0 - r))) for
    undesirable examples. rewards (P,), desirable (P,) bool, z0 scalar (``kto_reference_point``).
    chosen / rejected hold beta r of the desirable / undesirable examples."""
    v = torch.where(desirable, torch.sigmoid(beta * (rewards - z0)), torch.sigmoid(beta * (z0 - rewards)))
    lam = torch.where(desirable, torch.as_tensor(lambda_d), torch.as_tensor(lambda_u)).to(rewards.dtype)
    losses = lam * (1.0 - v)
    r = beta * rewards.detach()
    return PreferenceTerms(_mean(losses, weights), r[desirable], r[~desirable], paired=False)


def sdpo_loss(
    chosen: torch.Tensor,
    negatives: torch.Tensor,
    examined: torch.Tensor,
    *,
    beta: float,
    weights: torch.Tensor | None = None,
) -> PreferenceTerms:
    """In-banner softmax DPO (S-DPO, Chen et al. 2024) with examination-weighted negatives:
        -log sigmoid(-log sum_j e_j exp(beta (r_j - r_w)))  =  softplus(logsumexp_j(beta (r_j - r_w) + log e_j)).
    chosen (P,): the chosen product's implicit reward; negatives (P, J): its shown-not-chosen
    neighbours'; examined (P, J): each neighbour's examination probability (0 where it is not a
    negative), so a slot the user never saw rejects nothing. An example with no examined negative has
    loss 0. rejected reports the examination-weighted mean of beta r_j."""
    has = examined.sum(-1) > 0  # (P,)
    log_e = torch.where(examined > 0, examined.clamp_min(1e-30).log(), torch.full_like(examined, -torch.inf))
    x = beta * (negatives - chosen.unsqueeze(-1)) + log_e  # (P, J)
    x = torch.where(has.unsqueeze(-1), x, torch.zeros_like(x))  # no all -inf row: its gradient is nan
    losses = torch.where(has, F.softplus(torch.logsumexp(x, -1)), torch.zeros_like(chosen))
    w_neg = examined / examined.sum(-1, keepdim=True).clamp_min(1e-30)
    rejected = beta * (w_neg * negatives.detach()).sum(-1)
    return PreferenceTerms(_mean(losses, weights), beta * chosen.detach()[has], rejected[has])


def importance_weights(logp_ref: torch.Tensor, logp_behaviour: torch.Tensor, clip: float) -> torch.Tensor:
    """(P,) pi_ref / mu per example, clipped at ``clip`` and self-normalised to mean 1, so that the
    loss on logs from a logging policy mu is, up to the clipping, the loss on data from the reference
    (the distribution DPO's derivation assumes)."""
    w = (logp_ref - logp_behaviour).exp().clamp(max=clip)
    return w / w.mean().clamp_min(1e-12)
