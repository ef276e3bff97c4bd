"""A planted popularity bias: a reference whose logits get a known boost toward popular products.

logits'_j = logits_j + delta * z_j, z = standardised log-popularity (mean 0, std 1 over the catalogue),
so delta is in nats per standard deviation of log-popularity. The audit should find it (popularity
lift growing with delta) and the debiased path should remove most of it.
"""

from __future__ import annotations

import torch

from recsys_rl import slate
from recsys_rl.records import BannerBatch, ContextBatch


def popularity_boost(popularity: torch.Tensor) -> torch.Tensor:
    """(N,) standardised log-popularity."""
    z = popularity.clamp_min(1e-12).log()
    return (z - z.mean()) / z.std().clamp_min(1e-12)


class PopularityBoosted:
    """A full-catalogue policy (``BannerPolicy`` with ``uses_candidates`` False) with ``delta`` planted."""

    uses_candidates = False

    def __init__(self, policy, popularity: torch.Tensor, delta: float):
        if policy.uses_candidates:
            raise ValueError("planted bias: needs a full-catalogue policy (policy.candidates = 0)")
        self.policy, self.delta = policy, delta
        self.boost = delta * popularity_boost(popularity)
        self.n_products, self.banner_size = policy.n_products, policy.banner_size

    @torch.no_grad()
    def logits(self, ctx: ContextBatch) -> torch.Tensor:
        return self.policy.logits(ctx) + self.boost

    @torch.no_grad()
    def sample(self, ctx: ContextBatch, generator: torch.Generator | None = None) -> BannerBatch:
        logits = self.logits(ctx)
        items = slate.gumbel_topk(logits, self.banner_size, generator)
        return BannerBatch(items, slate.log_prob(logits, items))

    @torch.no_grad()
    def banner_log_prob(self, ctx: ContextBatch, items: torch.Tensor) -> torch.Tensor:
        return slate.log_prob(self.logits(ctx), items)
