"""Exposure against merit (Singh & Joachims 2018): does attention follow what products are worth?

merit_j = the mean expected reward of product j given it is examined, over the users it is shown to
(exact on the simulator; a reward model's prediction on logs). For a group G (head or tail):
ratio_G = (G's share of exposure) / (G's share of merit over the shown products); 1 = exposure in
proportion to merit, > 1 = over-exposed.
"""

from __future__ import annotations

import torch


def merit(items: torch.Tensor, value: torch.Tensor, n_products: int) -> torch.Tensor:
    """(N,) float64 mean of value (B, K) per shown product of items (B, K); NaN where never shown."""
    total = torch.zeros(n_products, dtype=torch.float64).index_add_(
        0, items.reshape(-1), value.reshape(-1).to(torch.float64)
    )
    count = torch.bincount(items.reshape(-1), minlength=n_products).to(torch.float64)
    return total / count


def exposure_per_merit(exposure: torch.Tensor, merit_j: torch.Tensor, group: torch.Tensor) -> float:
    """(group's exposure share) / (group's merit share among shown products); NaN if the group has no merit."""
    shown = ~merit_j.isnan()
    m = merit_j.nan_to_num(0.0).clamp_min(0.0)
    merit_total, exposure_total = m[shown].sum(), exposure.sum()
    merit_share = m[shown & group].sum() / merit_total if merit_total > 0 else torch.tensor(float("nan"))
    if merit_share <= 0 or exposure_total <= 0:
        return float("nan")
    return float((exposure[group].sum() / exposure_total) / merit_share)
