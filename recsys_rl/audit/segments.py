"""User segments for the audit: who gains from a fine-tune and who pays.

From the contexts alone: users with an empty history, light buyers (history no longer than the median
length of those with one) and heavy buyers (longer). From the world: any per-user group
(``AuditWorld.user_groups``, e.g. price-sensitive users), as "<name>" and "not_<name>".
"""

from __future__ import annotations

import torch

from recsys_rl.records import PAD


def segments(
    history: torch.Tensor, users: torch.Tensor | None = None, groups: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """name -> (B,) bool for contexts with histories (B, H) of users (B,); empty segments left out."""
    length = (history != PAD).sum(1)
    out = {"empty_history": length == 0}
    if (length > 0).any():
        median = length[length > 0].median()
        out["light_buyers"] = (length > 0) & (length <= median)
        out["heavy_buyers"] = length > median
    for name, member in (groups or {}).items():
        if users is None:
            continue
        m = member[users]
        out[name], out[f"not_{name}"] = m, ~m
    return {k: v for k, v in out.items() if v.any()}


def segment_values(
    masks: dict[str, torch.Tensor], value: torch.Tensor, reference: torch.Tensor, oracle: torch.Tensor
) -> dict[str, float]:
    """Per segment: the mean value (B,) of a policy and the share of the reference->oracle gap it
    closes there (0 where the oracle is no better), as ``segment_<name>_value`` / ``_gap_closed``."""
    out = {}
    for name, m in masks.items():
        v, r, o = value[m].mean(), reference[m].mean(), oracle[m].mean()
        out[f"segment_{name}_value"] = float(v)
        out[f"segment_{name}_gap_closed"] = float((v - r) / (o - r)) if o > r else 0.0
    return out
