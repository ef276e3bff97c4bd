"""How concentrated exposure is: Gini, the Lorenz curve, coverage and the long tail's share."""

from __future__ import annotations

import torch


def gini(x: torch.Tensor) -> float:
    """Gini coefficient of non-negative x (N,): 0 when all equal, (N-1)/N when one holds everything.

    G = sum_i (2i - N - 1) x_(i) / (N sum x), x sorted ascending, i = 1..N."""
    n = len(x)
    total = x.sum()
    if n == 0 or total <= 0:
        return 0.0
    s = x.to(torch.float64).sort().values
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((2 * i - n - 1) * s).sum() / (n * s.sum()))


def lorenz(x: torch.Tensor) -> torch.Tensor:
    """(N+1,) cumulative share of the total held by the poorest 0..N products (starts at 0, ends at 1)."""
    s = x.to(torch.float64).sort().values.cumsum(0)
    return torch.cat([s.new_zeros(1), s / s[-1].clamp_min(1e-300)])


def coverage(x: torch.Tensor) -> float:
    """Share of products with any exposure."""
    return float((x > 0).to(torch.float64).mean())


def tail_share(x: torch.Tensor, head: torch.Tensor) -> float:
    """Share of exposure x (N,) going to the long tail: products outside ``head`` (N,) bool."""
    total = x.sum()
    return float(x[~head].sum() / total) if total > 0 else 0.0
