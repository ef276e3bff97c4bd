"""The banner policy network; the same class is the frozen baseline (reference) recommender.

context -> query (B, D) -> logits (B, N) = query @ E^T + bias: one matmul scores the whole catalogue.
A banner is a Plackett–Luce draw of 5 products from those logits (see ``recsys_rl.slate``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from recsys_rl import slate
from recsys_rl.records import BANNER_SIZE, BannerBatch, ContextBatch


class BannerPolicy(nn.Module):
    """Context encoder + product embeddings + a value head (the critic, unused by the reference).

    Inputs are raw product ids; PAD (-1) in the history is mapped to a padding row that embeds to zero.
    """

    def __init__(self, n_products: int, embed_dim: int = 32, hidden_dim: int = 128, n_user_features: int = 0):
        super().__init__()
        self.n_products = n_products
        self.n_user_features = n_user_features
        self.item_in = nn.Embedding(n_products + 1, embed_dim, padding_idx=n_products)
        self.encoder = nn.Sequential(
            nn.Linear(2 * embed_dim + n_user_features, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
        )
        self.to_query = nn.Linear(hidden_dim, embed_dim)
        self.item_out = nn.Parameter(torch.randn(n_products, embed_dim) * embed_dim**-0.5)
        self.item_bias = nn.Parameter(torch.zeros(n_products))
        self.value_head = nn.Linear(hidden_dim, 1)

    def _hidden(self, viewed: torch.Tensor, history: torch.Tensor, user_features: torch.Tensor | None):
        mask = history >= 0  # (B, H)
        hist = self.item_in(torch.where(mask, history, self.n_products))  # (B, H, D), pads are zero
        count = mask.sum(1, keepdim=True).clamp_min(1)
        pooled = hist.sum(1) / count  # (B, D) mean of past purchases
        parts = [self.item_in(viewed), pooled]
        if self.n_user_features:
            parts.append(user_features)
        return self.encoder(torch.cat(parts, dim=-1))  # (B, hidden)

    def forward(self, viewed: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """(B,) viewed ids, (B, H) history ids -> (B, N) logits. The signature MLflow logs and serving calls."""
        h = self._hidden(viewed, history, None)
        return self.to_query(h) @ self.item_out.T + self.item_bias

    def logits(self, ctx: ContextBatch) -> torch.Tensor:
        """(B, N) logits for a batch of contexts."""
        h = self._hidden(ctx.viewed, ctx.history, ctx.user_features)
        return self.to_query(h) @ self.item_out.T + self.item_bias

    def logits_and_value(self, ctx: ContextBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) logits and (B,) critic value, sharing one encoder pass."""
        h = self._hidden(ctx.viewed, ctx.history, ctx.user_features)
        return self.to_query(h) @ self.item_out.T + self.item_bias, self.value_head(h).squeeze(-1)

    def query(self, ctx: ContextBatch) -> torch.Tensor:
        """(B, D) context representation (used as features by the linear bandit baseline)."""
        return self.to_query(self._hidden(ctx.viewed, ctx.history, ctx.user_features))

    @torch.no_grad()
    def sample(
        self,
        ctx: ContextBatch,
        k: int = BANNER_SIZE,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> BannerBatch:
        """Draw one banner per context with its exact log-propensity under PL(logits / temperature)."""
        logits = self.logits(ctx)
        items = slate.gumbel_topk(logits, k, generator, temperature)
        return BannerBatch(items, slate.log_prob(logits, items, temperature))

    @torch.no_grad()
    def greedy(self, ctx: ContextBatch, k: int = BANNER_SIZE) -> torch.Tensor:
        """(B, k) the top-k banner: what evaluation and deterministic serving show."""
        return slate.greedy(self.logits(ctx), k)

    def frozen_copy(self) -> BannerPolicy:
        """A detached, gradient-free copy: the reference policy for the KL penalty."""
        ref = copy.deepcopy(self)
        ref.requires_grad_(False)
        return ref.eval()

    def hparams(self) -> dict:
        return {
            "n_products": self.n_products,
            "embed_dim": self.item_out.shape[1],
            "hidden_dim": self.to_query.in_features,
            "n_user_features": self.n_user_features,
        }


def save_policy(policy: BannerPolicy, path) -> None:
    """Save weights and the constructor arguments needed to rebuild the network."""
    torch.save({"hparams": policy.hparams(), "state_dict": policy.state_dict()}, path)


def load_policy(path) -> BannerPolicy:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    policy = BannerPolicy(**blob["hparams"])
    policy.load_state_dict(blob["state_dict"])
    return policy
