"""Popularity: the same banner for everyone, the products that earned the most reward in the logs."""

from __future__ import annotations

import torch

from recsys_rl.config import RewardScheme
from recsys_rl.records import ContextBatch, LoggedBatch
from recsys_rl.rewards import position_rewards
from recsys_rl.yardsticks.common import ScoredClassic, reward_per_product


class Popularity(ScoredClassic):
    """score_j = total logged reward of product j under the scheme (clicks for ``ctr``), context-free.

    Counts, not rates, as the classic does: it inherits the logger's exposure, which a uniform-random
    logger makes equal for every product.
    """

    name = "popularity"

    def __init__(self, totals: torch.Tensor, banner_size: int) -> None:
        super().__init__(len(totals), banner_size)
        self.totals = totals  # (N,)

    @classmethod
    def fit(cls, logs: LoggedBatch, scheme: RewardScheme, n_products: int) -> Popularity:
        rewards = position_rewards(scheme, logs.outcomes)
        return cls(reward_per_product(rewards, logs.banners.items, n_products), logs.banners.items.shape[1])

    def logits(self, ctx: ContextBatch) -> torch.Tensor:
        return self.totals.expand(len(ctx), -1)
