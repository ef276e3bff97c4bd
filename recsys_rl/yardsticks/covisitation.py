"""Co-visitation: item-to-item counts from the logs, the "people who viewed this also ..." classic.

Each logged impression is one visit: the viewed product, the purchase history and the banner
products the user clicked. Two distinct products in the same visit co-visit once. A context is scored
by the co-visitation counts of its own products: score_j = sum_{i in context} C[i, j].
"""

from __future__ import annotations

import torch

from recsys_rl.records import PAD, ContextBatch, LoggedBatch
from recsys_rl.yardsticks.common import ScoredClassic, context_counts, context_items

PAIR_CHUNK = 16_384
"""Impressions whose pairs are counted at once: 16k x (16 x 16) pair keys (~32 MB of int64)."""


def covisit_counts(logs: LoggedBatch, n_products: int) -> torch.Tensor:
    """(N, N) sparse coalesced symmetric counts C[i, j] of visits holding both i and j (i != j)."""
    keys, counts = [], []
    clicked = logs.banners.items.masked_fill(logs.outcomes.clicks <= 0, PAD)
    visits = torch.cat([context_items(logs.contexts), clicked], dim=1)  # (n, 1 + H + K), PAD where none
    for start in range(0, len(visits), PAIR_CHUNK):
        v = visits[start : start + PAIR_CHUNK]
        a, b = v.unsqueeze(2), v.unsqueeze(1)  # every ordered pair of slots in one visit
        keep = (a != PAD) & (b != PAD) & (a != b)
        pairs = (a * n_products + b).expand_as(keep)[keep]
        # a product both in the context and clicked is one product of the visit: count each pair once
        rows = torch.arange(len(v)).view(-1, 1, 1).expand_as(keep)[keep]
        uniq = torch.unique(rows * n_products * n_products + pairs) % (n_products * n_products)
        k, c = torch.unique(uniq, return_counts=True)
        keys.append(k)
        counts.append(c)
    k, inverse = torch.unique(torch.cat(keys), return_inverse=True)
    c = torch.zeros(len(k), dtype=torch.float32).index_add_(0, inverse, torch.cat(counts).float())
    index = torch.stack([k // n_products, k % n_products])
    return torch.sparse_coo_tensor(index, c, (n_products, n_products), check_invariants=True).coalesce()


class CoVisitation(ScoredClassic):
    """score_j = sum over the context's products i of C[i, j]; ties and empty contexts fall back to
    popularity (a score below one co-visit)."""

    name = "covisitation"

    def __init__(self, counts: torch.Tensor, fallback: torch.Tensor, banner_size: int) -> None:
        super().__init__(counts.shape[0], banner_size)
        self.counts = counts  # (N, N) sparse, symmetric
        rank = fallback.argsort(stable=True).argsort().float()  # ties by id
        self.fallback = rank / len(rank)  # (N,) in [0, 1)

    @classmethod
    def fit(cls, logs: LoggedBatch, fallback: torch.Tensor, n_products: int) -> CoVisitation:
        """fallback: (N,) popularity totals that order products no co-visit separates."""
        return cls(covisit_counts(logs, n_products), fallback, logs.banners.items.shape[1])

    def logits(self, ctx: ContextBatch) -> torch.Tensor:
        bag = context_counts(ctx, self.n_products)  # (B, N)
        return torch.sparse.mm(self.counts, bag.T).T + self.fallback
