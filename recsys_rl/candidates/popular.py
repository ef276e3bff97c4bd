"""Popular products: one list for every context, the products the logs engage with most.

A shop's trending shelf. Query-independent, so it costs one (n,) list per version; it is what a new
or anonymous user (no viewed product, no history) gets from the sources besides the policy's top-M.
"""

from __future__ import annotations

import torch

from recsys_rl.records import ContextBatch, LoggedBatch


def engagement_counts(logs: LoggedBatch, n_products: int) -> torch.Tensor:
    """(N,) float64 clicks + units per product over the logged banners."""
    w = (logs.outcomes.clicks + logs.outcomes.units).reshape(-1).double()
    return torch.zeros(n_products, dtype=torch.float64).index_add_(0, logs.banners.items.reshape(-1), w)


def top_popular(counts: torch.Tensor, n: int) -> torch.Tensor:
    """(n,) long product ids by descending count (ties: lower id first); products never engaged with
    are left out, the rest padded with -1."""
    n = min(n, len(counts))
    order = torch.argsort(-counts, stable=True)[:n]
    return order.masked_fill(counts[order] <= 0, -1)


def popular_candidates(popular: torch.Tensor, ctx: ContextBatch) -> torch.Tensor:
    """(B, n) the popular list for each context."""
    return popular.expand(len(ctx.viewed), -1)
