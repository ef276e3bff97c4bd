"""Item-to-item co-occurrence from logs: for each product, the products most often seen with it.

"Seen with" is what a shop logs: a product in a context (viewed, or bought before) together with a
product the same user clicked or bought from the banner (co-view / co-click), and two products in one
user's purchase history (co-purchase). Counts are kept sparse: the (anchor, neighbour) pairs are
reduced with one ``torch.unique`` over int64 keys a * N + b, never an (N, N) matrix, so a million
products cost the pairs the logs hold, not N^2.

Per context the source gathers the neighbour lists of the context's own products, interleaved by rank
(every anchor's best neighbour, then every anchor's second, ...), so a long history cannot crowd the
viewed product's neighbours out.
"""

from __future__ import annotations

import torch

from recsys_rl.candidates.context import context_products
from recsys_rl.records import ContextBatch, LoggedBatch


def cooccurrence_pairs(logs: LoggedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(anchor (P,), neighbour (P,), weight (P,)) over every log row: each context product with each
    engaged banner product (weight clicks + units) and with each other context product (weight 1).
    Pairs with a PAD side and self-pairs are dropped."""
    own = context_products(logs.contexts)  # (R, A)
    items = logs.banners.items  # (R, K)
    engaged = logs.outcomes.clicks + logs.outcomes.units  # (R, K)
    a1 = own.unsqueeze(2).expand(-1, -1, items.shape[1])  # (R, A, K)
    b1 = items.unsqueeze(1).expand_as(a1)
    w1 = engaged.unsqueeze(1).expand_as(a1).float()
    a2 = own.unsqueeze(2).expand(-1, -1, own.shape[1])  # (R, A, A)
    b2 = own.unsqueeze(1).expand_as(a2)
    w2 = torch.ones(a2.shape)
    a = torch.cat([a1.reshape(-1), a2.reshape(-1)])
    b = torch.cat([b1.reshape(-1), b2.reshape(-1)])
    w = torch.cat([w1.reshape(-1), w2.reshape(-1)])
    keep = (a >= 0) & (b >= 0) & (a != b) & (w > 0)
    return a[keep], b[keep], w[keep]


def top_neighbours(
    anchor: torch.Tensor, neighbour: torch.Tensor, weight: torch.Tensor, n_products: int, n: int
) -> torch.Tensor:
    """(N, n) long: each product's n neighbours by summed pair weight, best first (ties: lower id
    first), -1 where it has fewer. anchor, neighbour, weight: (P,) pairs, repeats summed."""
    table = torch.full((n_products, n), -1, dtype=torch.long)
    if len(anchor) == 0 or n == 0:
        return table
    keys, inverse = torch.unique(anchor * n_products + neighbour, return_inverse=True)  # sorted
    total = torch.zeros(len(keys), dtype=torch.float64).index_add_(0, inverse, weight.double())
    a, b = keys // n_products, keys % n_products
    order = torch.argsort(-total, stable=True)  # heaviest first; equal weights keep id order
    order = order[torch.argsort(a[order], stable=True)]  # grouped by anchor, heaviest first inside
    a, b = a[order], b[order]
    starts = torch.searchsorted(a, a, side="left")
    rank = torch.arange(len(a)) - starts
    keep = rank < n
    table[a[keep], rank[keep]] = b[keep]
    return table


def build_cooccurrence(logs: LoggedBatch, n_products: int, n: int) -> torch.Tensor:
    """(N, n) long neighbour table of the logs (see ``top_neighbours``)."""
    return top_neighbours(*cooccurrence_pairs(logs), n_products, n)


def cooccurrence_candidates(table: torch.Tensor, ctx: ContextBatch, width: int) -> torch.Tensor:
    """(B, width) long: neighbours of the context's products, rank-interleaved across anchors, -1 pads
    (repeats are left to the union's de-duplication). table: (N, n) from ``build_cooccurrence``."""
    own = context_products(ctx)  # (B, A)
    nb = table[own.clamp_min(0)]  # (B, A, n)
    nb = nb.masked_fill((own < 0).unsqueeze(2), -1)
    flat = nb.transpose(1, 2).reshape(len(own), -1)  # rank-major: (B, n * A)
    if flat.shape[1] >= width:
        return flat[:, :width]
    return torch.cat([flat, torch.full((len(own), width - flat.shape[1]), -1, dtype=torch.long)], 1)
