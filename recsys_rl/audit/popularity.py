"""Popularity bias of recommendations: average recommended popularity and its lift over what the
users bought themselves (Abdollahpouri et al. 2019, "The unfairness of popularity bias")."""

from __future__ import annotations

import torch

from recsys_rl.records import PAD


def average_popularity(items: torch.Tensor, popularity: torch.Tensor) -> torch.Tensor:
    """(B,) mean popularity of each row's products, items (B, L) PAD-padded; NaN for an empty row."""
    real = items != PAD
    pop = popularity.to(torch.float64)[items.clamp_min(0)] * real
    return pop.sum(1) / real.sum(1)  # 0/0 -> NaN for empty rows


def popularity_lift(banners: torch.Tensor, history: torch.Tensor, popularity: torch.Tensor) -> float:
    """(ARP(banners) - ARP(histories)) / ARP(histories), over users with a history.

    ARP = the average over users of the mean popularity of their items; banners (B, K), history (B, H).
    0: banners as popular as what users buy; > 0: banners lean to popular products."""
    has = (history != PAD).any(1)
    if not has.any():
        return float("nan")
    rec = average_popularity(banners[has], popularity).mean()
    own = average_popularity(history[has], popularity).mean()
    return float((rec - own) / own)
