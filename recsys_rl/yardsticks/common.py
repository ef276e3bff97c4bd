"""What every classic yardstick shares: a fitted scorer with the policy's greedy-banner interface.

A classic is fitted once on logs and then scores every product for a context, ``logits(ctx)`` (B, N),
exactly as a full-catalogue ``BannerPolicy`` does; its banner is the top-K of those scores
(``greedy``). So ``evaluation.greedy_banners``, ``Evaluator.score_banners`` (the simulator's exact
value) and the OPE estimators that take logits treat a classic like the reference or the fine-tune.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import torch

from recsys_rl import slate
from recsys_rl.records import PAD, ContextBatch, LoggedBatch


class Classic(Protocol):
    """A fitted yardstick: deterministic scores over the catalogue and their top-K banner."""

    name: str
    n_products: int
    banner_size: int

    def logits(self, ctx: ContextBatch) -> torch.Tensor:
        """(B, N) scores; higher is shown first."""
        ...

    def greedy(self, ctx: ContextBatch, k: int | None = None) -> torch.Tensor:
        """(B, k) banner: the top-k products by ``logits``."""
        ...


class ScoredClassic(ABC):
    """Base of the classics: ``greedy`` from ``logits``, and the (N, K) sizes every classic carries."""

    name = "classic"

    def __init__(self, n_products: int, banner_size: int) -> None:
        self.n_products, self.banner_size = n_products, banner_size

    @abstractmethod
    def logits(self, ctx: ContextBatch) -> torch.Tensor:
        """(B, N) scores of every product for each context."""

    def greedy(self, ctx: ContextBatch, k: int | None = None) -> torch.Tensor:
        return slate.greedy(self.logits(ctx), self.banner_size if k is None else k)

    def eval(self) -> ScoredClassic:
        """Already deterministic; present so callers can treat a classic like a policy."""
        return self


def context_items(ctx: ContextBatch) -> torch.Tensor:
    """(B, 1 + H) the context's products, viewed first then history most recent first; PAD where none."""
    return torch.cat([ctx.viewed.unsqueeze(1), ctx.history], dim=1)


def context_counts(ctx: ContextBatch, n_products: int) -> torch.Tensor:
    """(B, N) how often each product appears in the context (viewed + history): the bag of products."""
    items = context_items(ctx)
    valid = items != PAD
    counts = torch.zeros(len(items), n_products)
    counts.scatter_add_(1, items.clamp_min(0), valid.float())
    return counts


def reward_per_product(rewards: torch.Tensor, items: torch.Tensor, n_products: int) -> torch.Tensor:
    """(N,) logged reward summed per product; rewards and items (n, K) are the logged slots."""
    return torch.zeros(n_products).index_add_(0, items.reshape(-1), rewards.reshape(-1).float())


def show_rates(logs: LoggedBatch, n_products: int) -> torch.Tensor:
    """(N,) share of logged banners that showed each product (floored at one showing): the logger's
    probability of showing a product, exact for a context-free logger such as uniform random."""
    counts = torch.bincount(logs.banners.items.reshape(-1), minlength=n_products).float()
    return counts.clamp_min(1.0) / len(logs)
