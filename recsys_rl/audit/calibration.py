"""Calibration (Steck 2018): does the category mix of a user's banners match that of their history?

C_KL = KL(p || q~) with p the history's category mix, q the banners' (examination-weighted), and
q~ = (1 - alpha) q + alpha p so the divergence stays finite. 0 = perfectly calibrated.
"""

from __future__ import annotations

import torch

from recsys_rl.records import PAD

ALPHA = 0.01


def category_mix(
    items: torch.Tensor, categories: torch.Tensor, n_categories: int, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, C) share of each category among items (B, L) (PAD ignored), weighted by weights (L,) or (B, L)."""
    real = (items != PAD).to(torch.float64)
    w = real if weights is None else real * weights.to(torch.float64).expand(items.shape)
    cats = categories[items.clamp_min(0)]
    mix = torch.zeros(len(items), n_categories, dtype=torch.float64).scatter_add_(1, cats, w)
    return mix / mix.sum(1, keepdim=True).clamp_min(1e-300)


def calibration_kl(p: torch.Tensor, q: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """(B,) KL(p || (1 - alpha) q + alpha p) per row of category mixes p, q (B, C)."""
    q_tilde = (1 - alpha) * q + alpha * p
    terms = torch.where(p > 0, p * (p.clamp_min(1e-300).log() - q_tilde.clamp_min(1e-300).log()), 0.0)
    return terms.sum(1)


def mean_calibration_kl(
    banners: torch.Tensor,
    history: torch.Tensor,
    categories: torch.Tensor,
    examination: torch.Tensor,
) -> float:
    """Mean C_KL over users with a history: banners (B, K) weighted by examination (K,), history (B, H)."""
    has = (history != PAD).any(1)
    if not has.any():
        return float("nan")
    c = int(categories.max()) + 1
    p = category_mix(history[has], categories, c)
    q = category_mix(banners[has], categories, c, examination[: banners.shape[1]])
    return float(calibration_kl(p, q).mean())
