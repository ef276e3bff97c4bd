"""Classic bandit baselines choosing 5-product banners, for comparison on the same budget.

Both treat each banner slot as a pull of the product shown there, rewarded with what that position
earned, and rank products by their estimate (top-5 = banner). Neither models position bias.
"""

from __future__ import annotations

import torch

from recsys_rl import slate
from recsys_rl.config import RewardScheme
from recsys_rl.env import Environment
from recsys_rl.policy import BannerPolicy
from recsys_rl.progress import progress_bar
from recsys_rl.records import BANNER_SIZE, ContextBatch
from recsys_rl.rewards import position_rewards

LARGE_ELEMENTS = 1 << 24
"""Above this many (contexts x products) scores per round, epsilon-greedy acts without a (B, N) matrix."""


MAX_POSTERIOR_ELEMENTS = 1 << 28
"""Largest (N, d, d) posterior LinearThompson allocates (1 GiB of float32): ~240k products at d = 33."""


class EpsilonGreedy:
    """Context-free: per-product mean reward; exploit the top-K or, with prob epsilon, a random banner."""

    def __init__(self, n_products: int, epsilon: float = 0.1, banner_size: int = BANNER_SIZE):
        self.n, self.epsilon, self.banner_size = n_products, epsilon, banner_size
        self.sums = torch.zeros(n_products)
        self.counts = torch.zeros(n_products)

    def logits(self, ctx: ContextBatch) -> torch.Tensor:
        means = self.sums / self.counts.clamp_min(1)
        return means.expand(len(ctx), -1)

    def act(self, ctx: ContextBatch, g: torch.Generator) -> torch.Tensor:
        b = len(ctx)
        if b * self.n > LARGE_ELEMENTS:
            return self._act_large(b, g)
        scores = self.logits(ctx) + 1e-6 * torch.rand(b, self.n, generator=g)  # random tie-break
        explore = torch.rand(b, generator=g) < self.epsilon
        scores = torch.where(explore.unsqueeze(1), torch.rand(b, self.n, generator=g), scores)
        return slate.greedy(scores, self.banner_size)

    def _act_large(self, b: int, g: torch.Generator) -> torch.Tensor:
        """Bounded memory at large N: O(N + B) per round instead of (B, N). Exploiting rows share one
        random tie-break of the means per round (the agent is context-free); exploring rows show K
        distinct uniform products (rows with a repeat redrawn)."""
        means = self.sums / self.counts.clamp_min(1)
        best = (means + 1e-6 * torch.rand(self.n, generator=g)).topk(self.banner_size).indices
        items = best.expand(b, -1).clone()
        explore = (torch.rand(b, generator=g) < self.epsilon).nonzero().squeeze(1)
        rand = torch.randint(0, self.n, (len(explore), self.banner_size), generator=g)
        while len(rand):
            s = rand.sort(1).values
            bad = (s[:, 1:] == s[:, :-1]).any(1).nonzero().squeeze(1)
            if not len(bad):
                break
            rand[bad] = torch.randint(0, self.n, (len(bad), self.banner_size), generator=g)
        items[explore] = rand
        return items

    def update(self, ctx: ContextBatch, items: torch.Tensor, rewards: torch.Tensor) -> None:
        self.sums.index_add_(0, items.reshape(-1), rewards.reshape(-1))
        self.counts.index_add_(0, items.reshape(-1), torch.ones(items.numel()))


class LinearThompson:
    """Disjoint linear Thompson sampling: per product j, reward ~ theta_j . x with x the context features.

    Features x (B, d+1) are the reference policy's normalised query vector plus a constant. One posterior
    draw theta ~ N(A_j^-1 b_j, v^2 A_j^-1) per product per round (batched Cholesky over products).
    """

    def __init__(self, n_products: int, features: BannerPolicy, v: float = 0.3, ridge: float = 1.0):
        self.n, self.features, self.v = n_products, features, v
        self.banner_size = features.banner_size
        d = features.item_out.shape[1] + 1
        if n_products * d * d > MAX_POSTERIOR_ELEMENTS:
            raise ValueError(
                f"n_products: LinearThompson keeps a {d}x{d} posterior per product, "
                f"{n_products * d * d * 4 / 2**30:.1f} GiB at {n_products} products (limit "
                f"{MAX_POSTERIOR_ELEMENTS * 4 / 2**30:.0f} GiB); use EpsilonGreedy at this catalogue size"
            )
        self.A = ridge * torch.eye(d).repeat(n_products, 1, 1)  # (N, d, d)
        self.b = torch.zeros(n_products, d)

    @torch.no_grad()
    def x(self, ctx: ContextBatch) -> torch.Tensor:
        q = torch.nn.functional.normalize(self.features.query(ctx), dim=-1)
        return torch.cat([q, torch.ones(len(ctx), 1)], dim=1)

    def _mean(self) -> torch.Tensor:
        return torch.linalg.solve(self.A, self.b.unsqueeze(-1)).squeeze(-1)  # (N, d)

    def logits(self, ctx: ContextBatch) -> torch.Tensor:
        return self.x(ctx) @ self._mean().T

    def act(self, ctx: ContextBatch, g: torch.Generator) -> torch.Tensor:
        L = torch.linalg.cholesky(self.A)  # A = L L^T, so L^-T z ~ N(0, A^-1)
        z = torch.randn(self.b.shape, generator=g).unsqueeze(-1)
        noise = torch.linalg.solve_triangular(L.transpose(1, 2), z, upper=True).squeeze(-1)
        theta = self._mean() + self.v * noise  # (N, d)
        return slate.greedy(self.x(ctx) @ theta.T, self.banner_size)

    def update(self, ctx: ContextBatch, items: torch.Tensor, rewards: torch.Tensor) -> None:
        x = self.x(ctx).repeat_interleave(items.shape[1], 0)  # (B*K, d)
        flat = items.reshape(-1)
        self.A.index_add_(0, flat, x.unsqueeze(2) * x.unsqueeze(1))
        self.b.index_add_(0, flat, x * rewards.reshape(-1, 1))


def run_bandit(
    agent,
    env: Environment,
    scheme: RewardScheme,
    impressions: int,
    batch: int,
    seed: int,
    progress: bool = True,
):
    """Let ``agent`` act and learn for ``impressions`` impressions, ``batch`` at a time."""
    g = torch.Generator().manual_seed(seed)
    rounds = max(1, impressions // batch)
    with progress_bar(type(agent).__name__, rounds * batch, progress) as advance:
        for _ in range(rounds):
            users = env.sample_users(batch, g)
            ctx = env.contexts(users, g)
            items = agent.act(ctx, g)
            r = position_rewards(scheme, env.respond(users, items, g))
            agent.update(ctx, items, r)
            advance(batch, reward=r.sum(-1).mean().item())
    return agent
