"""Re-show the context: the products the user already viewed or bought, most frequent then most recent.

Retargeting as many shops do it. Slots the context cannot fill take the most popular products.
"""

from __future__ import annotations

import torch

from recsys_rl.records import PAD, ContextBatch
from recsys_rl.yardsticks.common import ScoredClassic, context_items
from recsys_rl.yardsticks.popularity import Popularity

FREQUENCY_WEIGHT = 4.0
"""Score per occurrence in the context: above the recency (<= 2) plus fallback (< 1) terms, so a product
seen twice always precedes one seen once."""


class ReshowContext(ScoredClassic):
    """score_j = 4 * count_j + recency_j + fallback_j, where count_j is how often j is in the context
    (viewed + history), recency_j in [1, 2] for its most recent occurrence (viewed = 2, then history
    most recent first; 0 outside the context) and fallback_j in [0, 1) the popularity rank."""

    name = "reshow_context"

    def __init__(self, fallback: Popularity) -> None:
        super().__init__(fallback.n_products, fallback.banner_size)
        rank = fallback.totals.argsort(stable=True).argsort().float()  # 0: least popular; ties by id
        self.fallback = rank / len(rank)  # (N,) in [0, 1)

    def logits(self, ctx: ContextBatch) -> torch.Tensor:
        items = context_items(ctx)  # (B, 1 + H), most recent first
        valid = (items != PAD).float()
        slots = items.shape[1]
        recency = 2.0 - torch.arange(slots, dtype=torch.float32) / slots  # (1 + H,) from 2 down
        scores = self.fallback.expand(len(items), -1).clone()
        safe = items.clamp_min(0)
        scores.scatter_add_(1, safe, FREQUENCY_WEIGHT * valid)
        latest = torch.zeros_like(scores).scatter_reduce_(
            1, safe, recency.expand_as(valid) * valid, reduce="amax"
        )
        return scores + latest
