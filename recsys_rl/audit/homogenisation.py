"""Homogenisation (Chaney, Stewart & Engelhardt 2018): how alike different users' banners are.

Mean Jaccard similarity |A ∩ B| / |A ∪ B| of the product sets of two different users' banners, over
all pairs when there are at most ``max_pairs`` of them, else over ``max_pairs`` random pairs.
"""

from __future__ import annotations

import torch

MAX_PAIRS = 200_000


def jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(P,) Jaccard similarity of banners a, b (P, K) of distinct products each."""
    inter = (a.unsqueeze(2) == b.unsqueeze(1)).any(2).sum(1).to(torch.float64)
    return inter / (a.shape[1] + b.shape[1] - inter)


def mean_jaccard(
    banners: torch.Tensor, generator: torch.Generator | None = None, max_pairs: int = MAX_PAIRS
) -> float:
    """Mean Jaccard between the banners (B, K) of different rows (B >= 2)."""
    n = len(banners)
    if n < 2:
        return float("nan")
    if n * (n - 1) // 2 <= max_pairs:
        i, j = torch.triu_indices(n, n, offset=1)
    else:
        i = torch.randint(0, n, (max_pairs,), generator=generator)
        j = (i + torch.randint(1, n, (max_pairs,), generator=generator)) % n  # never i itself
    return float(jaccard(banners[i], banners[j]).mean())
