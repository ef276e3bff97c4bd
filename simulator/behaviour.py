"""Logging (behaviour) policies: what served the banners a log records, with exact propensities.

- ``PopularityBehaviour`` (the default): context-free Plackett-Luce over products by popularity.
- ``ExploringBehaviour``: a production recommender (any logits function, e.g. the reference) with
  epsilon-uniform exploration, the logger off-policy evaluation of a fine-tuned policy is meant for.

Popularity behaviour:

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

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from recsys_rl import slate
from recsys_rl.records import BANNER_SIZE, BannerBatch, ContextBatch

POLICY_VERSION = "behaviour-popularity"
EXPLORING_VERSION = "behaviour-exploring"
_BLOCK_ELEMS = 1 << 22


class Behaviour(Protocol):
    """What ``simulator.logged.generate_logs`` needs from a logging policy."""

    version: str

    def sample(self, contexts: ContextBatch, generator: torch.Generator) -> BannerBatch: ...


class PopularityBehaviour:
    """Plackett-Luce over the catalogue with logits alpha * log(popularity); ignores the context.

    popularity: (N,) positive weights (need not sum to 1).
    """

    version = POLICY_VERSION

    def __init__(self, popularity: torch.Tensor, alpha: float = 1.0, k: int = BANNER_SIZE) -> None:
        if popularity.dim() != 1 or len(popularity) < k:
            raise ValueError(f"popularity: expected (N,) with N >= {k}, got {tuple(popularity.shape)}")
        if not bool((popularity > 0).all()):
            raise ValueError("popularity: every product needs a positive weight (smooth zeros first)")
        self.alpha, self.banner_size = alpha, k
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
        items = torch.empty(n, self.banner_size, dtype=torch.long)
        u = torch.rand(n, self.banner_size, generator=generator, dtype=torch.float64)
        for k in range(self.banner_size):
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


class ExploringBehaviour:
    """A recommender with epsilon-uniform exploration: the epsilon-mix of a Plackett-Luce policy and
    uniformly random ordered banners.

    With probability 1 - epsilon the banner is a Plackett-Luce draw from ``logits_fn(contexts)`` (B, N)
    (Gumbel-top-K, ``recsys_rl.slate.gumbel_topk``); with probability epsilon it is one of the
    N!/(N-K)! ordered banners of distinct products, uniformly. The logged propensity is the exact
    probability of the banner under the mixture, whichever branch drew it:

        log mu(b|x) = logaddexp(log(1 - epsilon) + log PL(b|x), log epsilon - log(N!/(N-K)!))

    in float64 (``slate.log_prob``). The floor epsilon / (N!/(N-K)!) is tiny for whole banners, but per
    position the mixture shows every product with probability at least epsilon / N, which bounds the
    per-position importance weights of any target by N / epsilon times its marginal (1/epsilon for the
    uniform policy); see ``position_marginals``.
    """

    def __init__(
        self,
        logits_fn: Callable[[ContextBatch], torch.Tensor],
        n_products: int,
        epsilon: float,
        version: str = EXPLORING_VERSION,
        k: int = BANNER_SIZE,
    ) -> None:
        if n_products < k:
            raise ValueError(f"n_products: expected >= {k}, got {n_products}")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon: must be in [0, 1], got {epsilon}")
        self.logits_fn, self.n_products, self.epsilon, self.version = logits_fn, n_products, epsilon, version
        self.banner_size = k
        # log of the number of ordered banners, N (N-1) ... (N-K+1)
        self.log_n_banners = sum(math.log(n_products - i) for i in range(k))

    def _logits(self, contexts: ContextBatch) -> torch.Tensor:
        with torch.no_grad():
            s = self.logits_fn(contexts)
        if s.dim() != 2 or s.shape != (len(contexts), self.n_products):
            raise ValueError(
                f"logits_fn: expected logits of shape ({len(contexts)}, {self.n_products}), got {tuple(s.shape)}"
            )
        return s.detach().double()

    def _blocks(self, n: int):
        step = max(1, _BLOCK_ELEMS // self.n_products)
        return (slice(a, min(n, a + step)) for a in range(0, n, step))

    def sample(self, contexts: ContextBatch, generator: torch.Generator) -> BannerBatch:
        """One banner per context, with the exact log-propensity of the mixture."""
        n = len(contexts)
        explore = torch.rand(n, generator=generator, dtype=torch.float64) < self.epsilon
        items = torch.empty(n, self.banner_size, dtype=torch.long)
        log_prob = torch.empty(n, dtype=torch.float64)
        for sl in self._blocks(n):
            s = self._logits(contexts[sl])
            items[sl] = slate.gumbel_topk(s, self.banner_size, generator)
            rows = explore[sl].nonzero().squeeze(1)
            if len(rows):  # uniform ordered banner: the K largest of iid uniforms, in order
                noise = torch.rand(len(rows), self.n_products, generator=generator, dtype=torch.float64)
                items[sl][rows] = noise.topk(self.banner_size, dim=1).indices
            log_prob[sl] = self._mix(slate.log_prob(s, items[sl]))
        return BannerBatch(items=items, log_prob=log_prob.to(torch.float32))

    def log_prob(self, contexts: ContextBatch, items: torch.Tensor) -> torch.Tensor:
        """(B,) float64 exact log mu(b|x) of ordered banners items (B, K) of distinct products."""
        out = torch.empty(len(contexts), dtype=torch.float64)
        for sl in self._blocks(len(contexts)):
            out[sl] = self._mix(slate.log_prob(self._logits(contexts[sl]), items[sl]))
        return out

    def _mix(self, log_pl: torch.Tensor) -> torch.Tensor:
        """log((1 - eps) PL + eps / #banners) from log PL, in float64 (eps = 0 or 1 give -inf terms)."""
        eps = self.epsilon
        exploit = math.log1p(-eps) if eps < 1 else -math.inf
        explore = math.log(eps) - self.log_n_banners if eps > 0 else -math.inf
        return torch.logaddexp(
            log_pl.double() + exploit, torch.full_like(log_pl, explore, dtype=torch.float64)
        )

    def position_marginals(
        self,
        contexts: ContextBatch,
        items: torch.Tensor | np.ndarray,
        *,
        n_samples: int,
        generator: np.random.Generator,
    ) -> np.ndarray:
        """(B, K) mu_k(a_k|x) = (1 - eps) PL_k(a_k|x) + eps / N, the probability that the mixture shows
        the logged product a_k at position k: what IIPS/DR divide by (``evaluate_policy``'s
        behaviour_marginals).

        PL_k comes from the same machinery as a target policy's (``ope.policy_probs.target_probs``):
        exact by enumeration for catalogues of up to 12 products, otherwise the Rao-Blackwellised
        average over n_samples Plackett-Luce banners per context, which is unbiased.
        """
        from recsys_rl.ope.policy_probs import target_probs  # lazily: the OPE stack pulls in sklearn

        tp = target_probs(
            self._logits, contexts, items, n_samples=n_samples, keep_samples=0, generator=generator
        )
        return (1 - self.epsilon) * tp.marginals + self.epsilon / self.n_products
