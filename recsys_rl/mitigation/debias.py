"""Clipped, self-normalised inverse-propensity weights for retraining a reference on its own logs.

A click on product j can only happen where j was shown, and a policy shows what it already favours:
a reference retrained on those clicks learns the logger's exposure back. Weighting each click by
1 / P(j is examined), estimated as j's examination-weighted share of the logged exposure, undoes
that (the item-level propensity of Schnabel et al. 2016). Weights are clipped to [1/clip, clip] of
the mean, then scaled to mean 1 over the clicks (self-normalised) so the loss keeps its scale.
"""

from __future__ import annotations

import torch


def exposure_weights(
    items: torch.Tensor, clicks: torch.Tensor, exposure: torch.Tensor, clip: float
) -> torch.Tensor:
    """(B, K) weight of each logged position: items (B, K) shown, clicks (B, K) 0/1, exposure (N,)
    examination-weighted logged exposure per product. Mean 1 over clicked positions."""
    shown = exposure[exposure > 0]
    mean = shown.mean() if len(shown) else exposure.new_tensor(1.0)
    raw = (mean / exposure[items].clamp_min(1e-12)).clamp(1.0 / clip, clip)
    clicked = clicks > 0
    norm = raw[clicked].mean() if clicked.any() else raw.new_tensor(1.0)
    return (raw / norm).float()
