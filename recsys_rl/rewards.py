"""Reward schemes applied to sampled outcomes and to exact expectations.

A scheme is linear in per-position outcome indicators, so the expected reward of a banner is the same
linear map of the expected outcomes; that is what makes exact evaluation and the exact oracle possible.
"""

from __future__ import annotations

import torch

from recsys_rl.config import RewardScheme
from recsys_rl.records import ExpectedOutcome, OutcomeBatch


def position_rewards(scheme: RewardScheme, out: OutcomeBatch) -> torch.Tensor:
    """Reward earned at each banner position: (B, K)."""
    return (
        scheme.click * out.clicks
        + scheme.purchase * out.purchases
        + scheme.multi_purchase * out.multi
        + scheme.units * out.units
        + scheme.revenue * out.revenue
    )


def reward(scheme: RewardScheme, out: OutcomeBatch) -> torch.Tensor:
    """Per-banner reward of sampled outcomes: (B,)."""
    return position_rewards(scheme, out).sum(-1)


def expected_reward_per_position(scheme: RewardScheme, exp: ExpectedOutcome) -> torch.Tensor:
    """Exact expected reward of each banner position: (B, K)."""
    return (
        scheme.click * exp.click
        + scheme.purchase * exp.purchase
        + scheme.multi_purchase * exp.multi
        + scheme.units * exp.units
        + scheme.revenue * exp.revenue
    )


def expected_reward(scheme: RewardScheme, exp: ExpectedOutcome) -> torch.Tensor:
    """Per-banner exact expected reward: (B,)."""
    return expected_reward_per_position(scheme, exp).sum(-1)
