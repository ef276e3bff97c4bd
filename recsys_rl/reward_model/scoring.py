"""A reward model's value of banners and of policies, under any reward scheme (no sampling noise).

The proxy reward of a banner is ``expected_reward(scheme, reward_model.expected(x, banner))``: the
scheme's linear map of the model's predicted per-position outcomes, exactly as the simulator's gold
value is the same map of its exact expectations.
"""

from __future__ import annotations

import torch

from recsys_rl import slate
from recsys_rl.config import RewardScheme
from recsys_rl.records import ContextBatch
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
    model: BannerRewardModel,
    scheme: RewardScheme,
    ctx: ContextBatch,
    items: torch.Tensor,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) the model's expected reward of banners items (B, K); rows (B,) maps banners to contexts."""
    return expected_reward(scheme, model.expected(ctx, items, rows))


@torch.no_grad()
def policy_value(
    model: BannerRewardModel,
    scheme: RewardScheme,
    logits_fn,
    ctx: ContextBatch,
    generator: torch.Generator,
    n_samples: int = 4,
    chunk: int = 1024,
) -> float:
    """The model's value of the sampling policy PL(logits_fn(x)): mean over n_samples banners per context."""
    total = 0.0
    for s in range(0, len(ctx), chunk):
        c = ctx[s : s + chunk]
        logits = logits_fn(c)
        rows = torch.arange(len(c)).repeat_interleave(n_samples)
        items = slate.gumbel_topk(logits[rows], model.n_positions, generator)
        total += float(banner_rewards(model, scheme, c, items, rows).sum())
    return total / (len(ctx) * n_samples)


@torch.no_grad()
def argmax_banners(model: BannerRewardModel, scheme: RewardScheme, ctx: ContextBatch, chunk: int = 1024):
    """(C, K) the banner the reward model rates highest per context: the limit of optimising it (KL -> inf).

    Exact for the model: its examination does not depend on the other products shown and (fitted on
    logs where the top slot is examined most) is non-increasing, so sorting products by their expected
    reward given examination, g(x, j), and placing the best first maximises sum_k exam[k] g(x, a_k).
    """
    k = model.n_positions
    out = []
    for s in range(0, len(ctx), chunk):
        rel, buy, ext = model.catalogue_logits(ctx[s : s + chunk])  # (c, N) each
        lam = ext.clamp(max=4.0).exp()
        per_buy = (
            scheme.purchase
            + scheme.multi_purchase * -torch.expm1(-lam)
            + scheme.units * (1 + lam)
            + scheme.revenue * model.prices * (1 + lam)
        )
        g = torch.sigmoid(rel) * (scheme.click + torch.sigmoid(buy) * per_buy)
        out.append(g.topk(k, dim=1).indices)
    return torch.cat(out)
