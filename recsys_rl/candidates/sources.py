"""The extra candidate sources a policy version carries: co-occurrence, same category, popular.

Built once from the logs (and the item table's categories) and saved with the policy as buffers, so
serving, the learner, evaluation and OPE all rebuild exactly the same lists from a context. The
policy's own top-M and the context's products are not here: the first is the policy's retrieval
(``policy_topm``), the second needs nothing stored (``context``).
"""

from __future__ import annotations

import torch
from torch import nn

from recsys_rl.candidates.category import category_candidates, category_top
from recsys_rl.candidates.cooccurrence import build_cooccurrence, cooccurrence_candidates
from recsys_rl.candidates.popular import engagement_counts, popular_candidates, top_popular
from recsys_rl.records import ContextBatch, LoggedBatch

SOURCE_NAMES = ("cooccurrence", "category", "popular")
"""The stored sources, in union order; each has one feature (its bit) the policy can weigh."""


class CandidateSources(nn.Module):
    """Neighbour tables of one policy version. ``spec`` (saved in the policy's hparams) fixes every
    buffer's shape so a saved policy loads into an empty one:

    - cooccurrence: (N, neighbours) ids per product, ``cooccurrence`` of them gathered per context;
    - category: (N,) each product's category, (C, category_products) each category's best products,
      ``category`` of them gathered per context;
    - popular: (popular,) ids, the same for every context.
    A width of 0 turns a source off.
    """

    def __init__(
        self,
        n_products: int,
        cooccurrence: int = 0,
        neighbours: int = 0,
        category: int = 0,
        category_products: int = 0,
        n_categories: int = 0,
        popular: int = 0,
    ):
        super().__init__()
        popular = min(popular, n_products)
        self.spec = {
            "cooccurrence": cooccurrence,
            "neighbours": neighbours,
            "category": category if n_categories else 0,
            "category_products": category_products,
            "n_categories": n_categories,
            "popular": popular,
        }
        self.register_buffer("neighbour_table", torch.full((n_products, neighbours), -1, dtype=torch.int32))
        self.register_buffer(
            "item_category", torch.zeros(n_products if n_categories else 0, dtype=torch.long)
        )
        self.register_buffer(
            "category_table", torch.full((n_categories, category_products), -1, dtype=torch.long)
        )
        self.register_buffer("popular_ids", torch.full((popular,), -1, dtype=torch.long))

    @property
    def width(self) -> int:
        """Candidates per context the sources add at most (before de-duplication)."""
        s = self.spec
        return s["cooccurrence"] * bool(s["neighbours"]) + s["category"] + s["popular"]

    def lists(self, ctx: ContextBatch) -> list[torch.Tensor]:
        """One (B, W_s) long list per source of ``SOURCE_NAMES`` (W_s = 0 when off), -1 pads."""
        s, b = self.spec, len(ctx.viewed)
        empty = torch.empty(b, 0, dtype=torch.long)
        co = (
            cooccurrence_candidates(self.neighbour_table.long(), ctx, s["cooccurrence"])
            if s["cooccurrence"] and s["neighbours"]
            else empty
        )
        cat = (
            category_candidates(self.item_category, self.category_table, ctx, s["category"])
            if s["category"]
            else empty
        )
        pop = popular_candidates(self.popular_ids, ctx) if s["popular"] else empty
        return [co, cat, pop]


def build_sources(
    logs: LoggedBatch,
    n_products: int,
    cooccurrence: int,
    neighbours: int,
    category: int,
    category_products: int,
    popular: int,
    item_category: torch.Tensor | None = None,
) -> CandidateSources:
    """The sources of logs (and ``item_category`` (N,) long, optional: without it no category source)."""
    n_categories = 0 if item_category is None else int(item_category.max()) + 1
    src = CandidateSources(
        n_products, cooccurrence, neighbours, category, category_products, n_categories, popular
    )
    counts = engagement_counts(logs, n_products)
    if neighbours:
        src.neighbour_table.copy_(build_cooccurrence(logs, n_products, neighbours).int())
    if n_categories and category:
        src.item_category.copy_(item_category.long())
        src.category_table.copy_(category_top(item_category.long(), counts, category_products))
    if popular:
        src.popular_ids.copy_(top_popular(counts, popular))
    return src
