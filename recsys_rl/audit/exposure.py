"""Exposure per product: how much attention a policy's banners send each product.

Exposure of product j = E_context E_banner~pi [ sum_k examination[k] * 1(a_k = j) ], the expected number
of times j is looked at per impression. Under the served (sampling) Plackett-Luce policy it is estimated
from S sampled banners per context and accumulated with ``index_add_`` into one (N,) vector: nothing
the size of contexts x catalogue is kept beyond one scoring block.
"""

from __future__ import annotations

import torch

from recsys_rl import slate
from recsys_rl.records import ContextBatch

BLOCK_ELEMENTS = 1 << 22


def banner_exposure(items: torch.Tensor, examination: torch.Tensor, n_products: int) -> torch.Tensor:
    """(N,) float64 mean examination-weighted exposure per banner of banners items (B, K)."""
    k = items.shape[1]
    weights = examination[:k].to(torch.float64).expand(items.shape)
    out = torch.zeros(n_products, dtype=torch.float64)
    out.index_add_(0, items.reshape(-1), weights.reshape(-1))
    return out / max(len(items), 1)


@torch.no_grad()
def served_banners(
    scorer, contexts: ContextBatch, k: int, samples: int, generator: torch.Generator, n_products: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows (B*S,), items (B*S, k)): ``samples`` Plackett-Luce banners per context drawn as the policy
    serves (over its candidates when ``scorer.uses_candidates``, else from ``scorer(ctx)`` logits in
    blocks of at most ``BLOCK_ELEMENTS`` scores); rows[i] is the context of banner i."""
    restricted = bool(getattr(scorer, "uses_candidates", False))
    step = 1024 if restricted else max(1, min(1024, BLOCK_ELEMENTS // max(n_products, 1)))
    rows, banners = [], []
    for i in range(0, len(contexts), step):
        ctx = contexts[i : i + step]
        if restricted:
            ids, logits = scorer.candidates_and_logits(ctx)
        else:
            logits = scorer(ctx)
        for _ in range(samples):
            pick = slate.gumbel_topk(logits, k, generator)
            banners.append(ids.gather(1, pick) if restricted else pick)
            rows.append(torch.arange(i, i + len(ctx)))
    return torch.cat(rows), torch.cat(banners)


@torch.no_grad()
def policy_exposure(
    policy, contexts: ContextBatch, examination: torch.Tensor, samples: int, generator: torch.Generator
) -> torch.Tensor:
    """(N,) a ``BannerPolicy``'s served exposure over contexts: ``samples`` banners each, as it serves."""
    scorer = policy if policy.uses_candidates else policy.logits
    k = policy.banner_size
    _, items = served_banners(scorer, contexts, k, samples, generator, policy.n_products)
    return banner_exposure(items, examination, policy.n_products)
