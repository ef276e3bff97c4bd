"""Serving with an exploration floor: a share of banners drawn uniformly, exact propensities logged.

With floor e, the served distribution is the mixture (1 - e) pi + e U, U uniform over ordered banners
of K distinct products, so every product keeps at least e K / N of the slots and the logged
propensity P(banner) = (1 - e) pi(banner) + e U(banner) stays exact for off-policy correction.
"""

from __future__ import annotations

import math

import torch

from recsys_rl.env import Environment
from recsys_rl.records import BannerBatch, LoggedBatch


def uniform_banners(n: int, n_products: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """(n, k) banners uniform over ordered k-tuples of distinct products (random keys, top-k)."""
    return torch.rand(n, n_products, generator=generator).topk(k, dim=1).indices


def log_uniform(n_products: int, k: int) -> float:
    """log U(banner) = -log(N (N-1) ... (N-k+1))."""
    return -sum(math.log(n_products - i) for i in range(k))


@torch.no_grad()
def serve(policy, env: Environment, n: int, floor: float, generator: torch.Generator) -> LoggedBatch:
    """n fresh users served one banner each by ``policy`` with exploration ``floor``, and their outcomes."""
    users = env.sample_users(n, generator)
    ctx = env.contexts(users, generator)
    banners = policy.sample(ctx, generator=generator)
    items, logp = banners.items, banners.log_prob
    if floor > 0:
        k = items.shape[1]
        explore = torch.rand(n, generator=generator) < floor
        if explore.any():
            items = items.clone()
            items[explore] = uniform_banners(int(explore.sum()), env.n_products, k, generator)
            logp = logp.clone()
            logp[explore] = policy.banner_log_prob(ctx[explore], items[explore])
        logp = torch.logaddexp(
            math.log1p(-floor) + logp, torch.full_like(logp, math.log(floor) + log_uniform(env.n_products, k))
        )
    return LoggedBatch(ctx, BannerBatch(items, logp), env.respond(users, items, generator))
