"""Same-category neighbours from the item table: the most engaged products of a context's categories.

The item table says which category each product is in; the logs say which products of a category
sell. Per category the source keeps its n best products; per context it gathers the lists of the
categories of the context's products, rank-interleaved (every category's best, then every second
best, ...), the viewed product's category first.
"""

from __future__ import annotations

import torch

from recsys_rl.candidates.context import context_products
from recsys_rl.records import ContextBatch


def category_top(category: torch.Tensor, counts: torch.Tensor, n: int) -> torch.Tensor:
    """(C, n) long: each category's n products by descending count (ties: lower id first), -1 pads;
    products never engaged with are left out. category: (N,) long in [0, C); counts: (N,) popularity
    (``popular.engagement_counts``)."""
    n_categories = int(category.max()) + 1 if len(category) else 0
    table = torch.full((n_categories, n), -1, dtype=torch.long)
    order = torch.argsort(-counts, stable=True)
    order = order[counts[order] > 0]
    order = order[torch.argsort(category[order], stable=True)]  # by category, best first inside
    cats = category[order]
    rank = torch.arange(len(order)) - torch.searchsorted(cats, cats, side="left")
    keep = rank < n
    table[cats[keep], rank[keep]] = order[keep]
    return table


def category_candidates(
    category: torch.Tensor, table: torch.Tensor, ctx: ContextBatch, width: int
) -> torch.Tensor:
    """(B, width) long products of the context products' categories, rank-interleaved, -1 pads."""
    own = context_products(ctx)  # (B, A)
    lists = table[category[own.clamp_min(0)]]  # (B, A, n)
    lists = lists.masked_fill((own < 0).unsqueeze(2), -1)
    flat = lists.transpose(1, 2).reshape(len(own), -1)
    if flat.shape[1] >= width:
        return flat[:, :width]
    return torch.cat([flat, torch.full((len(own), width - flat.shape[1]), -1, dtype=torch.long)], 1)
