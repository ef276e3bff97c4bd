"""The default logging (behaviour) policy: context-free Plackett-Luce over products by popularity.

logits_j = alpha * log(popularity_j). A banner is a Plackett-Luce draw of K products without
replacement, and its log-propensity is exact:

    log P(j_1..j_K) = sum_k [ logit_{j_k} - logsumexp(logits of products not yet placed) ]

computed as log p_{j_k} - log(1 - sum_{i<k} p_{j_i}) with p = softmax(logits), in float64 so the
remaining mass does not cancel away. Off-policy estimators divide by these propensities, so they must
be the probability of the *ordered* banner under the policy that actually served it.

Sampling: Gumbel-top-K over the catalogue is the same distribution, but needs B x N noise (seconds per
batch at 100k products). Because the logits do not depend on the context, position k is drawn by
inverse CDF from p restricted to the products not yet placed: a uniform on the remaining mass is mapped
onto the full CDF by stepping over the placed products' intervals (in ascending product order), then
located with a binary search. That is O(K^2 + K log N) per banner and uses one uniform per position.
"""

from __future__ import annotations

import torch

from recsys_rl.records import BANNER_SIZE, BannerBatch, ContextBatch

POLICY_VERSION = "behaviour-popularity"


class PopularityBehaviour:
    """Plackett-Luce over the catalogue with logits alpha * log(popularity); ignores the context.

    popularity: (N,) positive weights (need not sum to 1).
    """

    version = POLICY_VERSION

    def __init__(self, popularity: torch.Tensor, alpha: float = 1.0) -> None:
        if popularity.dim() != 1 or len(popularity) < BANNER_SIZE:
            raise ValueError(
                f"popularity: expected (N,) with N >= {BANNER_SIZE}, got {tuple(popularity.shape)}"
            )
        if not bool((popularity > 0).all()):
            raise ValueError("popularity: every product needs a positive weight (smooth zeros first)")
        self.alpha = alpha
        self.log_p = torch.log_softmax(alpha * popularity.to(torch.float64).log(), dim=0)
        self.p = self.log_p.exp()
        cdf = torch.cumsum(self.p, dim=0)
        self._mass = self.p / cdf[-1]  # p as the sampler's CDF sees it, ending exactly at 1
        self.cdf = cdf / cdf[-1]

    @property
    def n_products(self) -> int:
        return len(self.p)

    def sample(self, contexts: ContextBatch | int, generator: torch.Generator) -> BannerBatch:
        """One banner per context (or ``contexts`` banners when given an int), with exact log-propensity."""
        n = contexts if isinstance(contexts, int) else len(contexts)
        items = torch.empty(n, BANNER_SIZE, dtype=torch.long)
        u = torch.rand(n, BANNER_SIZE, generator=generator, dtype=torch.float64)
        for k in range(BANNER_SIZE):
            items[:, k] = self._draw_excluding(u[:, k], items[:, :k])
            while True:  # float rounding can land on a placed product's boundary: redraw those rows
                rows = (items[:, k : k + 1] == items[:, :k]).any(dim=1).nonzero().squeeze(1)
                if len(rows) == 0:
                    break
                redraw = torch.rand(len(rows), generator=generator, dtype=torch.float64)
                items[rows, k] = self._draw_excluding(redraw, items[rows, :k])
        return BannerBatch(items=items, log_prob=self.log_prob(items))

    def log_prob(self, items: torch.Tensor) -> torch.Tensor:
        """(B,) exact log-probability of ordered banners items (B, K) of distinct products."""
        log_p = self.log_p[items]
        p = log_p.exp()
        placed = torch.cat([torch.zeros_like(p[:, :1]), torch.cumsum(p, dim=1)[:, :-1]], dim=1)
        return (log_p - torch.log1p(-placed.clamp(max=1.0))).sum(dim=1).to(torch.float32)

    def _draw_excluding(self, u: torch.Tensor, placed: torch.Tensor) -> torch.Tensor:
        """(b,) draws from p renormalised over products not in ``placed`` (b, k), from uniforms u (b,)."""
        placed = placed.sort(dim=1).values
        p_placed = self._mass[placed]
        y = u * (1 - p_placed.sum(dim=1)).clamp(min=0.0)
        starts = self.cdf[placed] - p_placed
        for i in range(placed.shape[1]):
            y = torch.where(y >= starts[:, i], y + p_placed[:, i], y)
        return torch.searchsorted(self.cdf, y, right=True).clamp_(max=self.n_products - 1)
