"""A reward model's value of banners and of policies, under any reward scheme (no sampling noise).

The proxy reward of a banner is ``expected_reward(scheme, reward_model.expected(x, banner))``: the
scheme's linear map of the model's predicted per-position outcomes, exactly as the simulator's gold
value is the same map of its exact expectations.
"""

from __future__ import annotations

import torch

from recsys_rl import slate
from recsys_rl.config import RewardScheme
from recsys_rl.records import BANNER_SIZE, ContextBatch
from recsys_rl.reward_model.model import BannerRewardModel
from recsys_rl.rewards import expected_reward


def check_scheme(model: BannerRewardModel, scheme: RewardScheme) -> None:
    """A revenue scheme needs the prices a log with revenue gave the model."""
    if scheme.revenue and not bool((model.prices > 0).any()):
        raise ValueError(
            f"--reward: scheme {scheme.name!r} rewards revenue, but the reward model was fitted on logs "
            "without revenue (it knows no prices)"
        )


@torch.no_grad()
def banner_rewards(
    model: BannerRewardModel, scheme: RewardScheme, ctx: ContextBatch, items: torch.Tensor,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """(B,) the model's expected reward of banners items (B, K); rows (B,) maps banners to contexts."""
    return expected_reward(scheme, model.expected(ctx, items, rows))


@torch.no_grad()
def policy_value(
    model: BannerRewardModel, scheme: RewardScheme, logits_fn, ctx: ContextBatch, generator: torch.Generator,
    n_samples: int = 4, chunk: int = 1024,
) -> float:  # fmt: skip
    """The model's value of the sampling policy PL(logits_fn(x)): mean over n_samples banners per context."""
    total = 0.0
    for s in range(0, len(ctx), chunk):
        c = ctx[s : s + chunk]
        logits = logits_fn(c)
        rows = torch.arange(len(c)).repeat_interleave(n_samples)
        items = slate.gumbel_topk(logits[rows], BANNER_SIZE, generator)
        total += float(banner_rewards(model, scheme, c, items, rows).sum())
    return total / (len(ctx) * n_samples)
