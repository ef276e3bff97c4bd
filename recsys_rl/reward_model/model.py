"""The learned reward model: graded outcomes per (context, product, position), position bias explicit.

Per context x, product j and banner position k (the simulator's physics, learned from logs):

    P(click | x, j, k)          = exam[k] * sigmoid(rel(x, j))       exam[0] = 1, exam[k] in (0, 1]
    P(purchase | click, x, j)   = sigmoid(buy(x, j))
    units - 1 | purchase        ~ Poisson(lam(x, j)),  lam = exp(ext(x, j))
    revenue                     = units * price[j]   (prices read from the logged purchases)

``rel``, ``buy`` and ``ext`` are dot products of a context encoding with per-head product embeddings
plus per-product biases. Examination depends on the position only and relevance on (x, j) only, so a
fit on logs of a policy that puts its favourites on top still predicts a product's outcome at any
slot: the logger's habit of showing j at position 1 is absorbed by exam[1], not by rel(x, j).
exam[0] is pinned to 1 (examination relative to the top slot): with it free, exam and sigmoid trade
off a common scale that the data barely identifies.

Expected outcomes (``expected``) come out as an ``ExpectedOutcome``, the record the simulator's exact
expectations use, so ``rewards.expected_reward`` turns them into any scheme's value.
Shapes: C contexts, B banners, K positions, N products, D embedding width.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys_rl.records import BANNER_SIZE, ContextBatch, ExpectedOutcome

HEADS = ("click", "purchase", "extra")


class BannerRewardModel(nn.Module):
    """Context encoder + three product-scoring heads + per-position examination logits."""

    def __init__(
        self,
        n_products: int,
        embed_dim: int = 32,
        hidden_dim: int = 128,
        n_positions: int = BANNER_SIZE,
        n_user_features: int = 0,
        categorical_vocab: list[list[str]] | None = None,
    ):
        super().__init__()
        self.n_products, self.n_positions = n_products, n_positions
        self.n_user_features = n_user_features
        self.categorical_vocab = [list(map(str, v)) for v in categorical_vocab or []]
        self.item_in = nn.Embedding(n_products + 1, embed_dim, padding_idx=n_products)
        extra = n_user_features + (embed_dim if self.categorical_vocab else 0)
        self.encoder = nn.Sequential(
            nn.Linear(2 * embed_dim + extra, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
        )
        self.query = nn.Linear(hidden_dim, len(HEADS) * embed_dim)  # one query per head
        self.item_out = nn.Parameter(torch.randn(len(HEADS), n_products, embed_dim) * embed_dim**-0.5)
        self.item_bias = nn.Parameter(torch.zeros(len(HEADS), n_products))
        self.exam_logit = nn.Parameter(torch.zeros(n_positions - 1))  # positions 1..K-1; position 0 is 1
        self.register_buffer("prices", torch.zeros(n_products))
        self.embed_dim, self.hidden_dim = embed_dim, hidden_dim
        if self.categorical_vocab:  # one table per categorical user feature (row 0: unknown), summed
            from recsys_rl.features import cardinalities

            self.category_embeddings = nn.ModuleList(
                nn.Embedding(c, embed_dim) for c in cardinalities(self.categorical_vocab)
            )

    def hparams(self) -> dict:
        return {
            "n_products": self.n_products,
            "embed_dim": self.embed_dim,
            "hidden_dim": self.hidden_dim,
            "n_positions": self.n_positions,
            "n_user_features": self.n_user_features,
            "categorical_vocab": self.categorical_vocab,
        }

    def examination(self) -> torch.Tensor:
        """(K,) P(position examined), relative to the top slot."""
        return torch.cat([self.exam_logit.new_ones(1), torch.sigmoid(self.exam_logit)])

    def encode(self, ctx: ContextBatch) -> torch.Tensor:
        """(C, H, D) one query per head for each context (H = 3 heads)."""
        mask = ctx.history >= 0
        hist = self.item_in(torch.where(mask, ctx.history, self.n_products))
        pooled = hist.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        parts = [self.item_in(torch.where(ctx.viewed >= 0, ctx.viewed, self.n_products)), pooled]
        if self.n_user_features:
            if ctx.user_features is None:
                raise ValueError(f"user_features: this reward model needs {self.n_user_features} per context")
            parts.append(ctx.user_features)
        if self.categorical_vocab:
            if ctx.user_categories is None:
                raise ValueError("user_categories: this reward model needs categorical user features")
            parts.append(sum(e(ctx.user_categories[:, c]) for c, e in enumerate(self.category_embeddings)))
        h = self.encoder(torch.cat(parts, dim=-1))
        return self.query(h).view(len(ctx), len(HEADS), self.embed_dim)

    def head_logits(self, ctx: ContextBatch, items: torch.Tensor, rows: torch.Tensor | None = None):
        """(3, B, K) logits rel, buy, ext of products items (B, K); rows (B,): context row of each banner."""
        q = self.encode(ctx)  # (C, 3, D)
        if rows is not None:
            q = q[rows]
        emb = self.item_out[:, items]  # (3, B, K, D)
        return torch.einsum("bhd,hbkd->hbk", q, emb) + self.item_bias[:, items]

    def catalogue_logits(self, ctx: ContextBatch) -> torch.Tensor:
        """(3, C, N) head logits for every product: for argmax banners and small catalogues."""
        q = self.encode(ctx)
        return torch.einsum("chd,hnd->hcn", q, self.item_out) + self.item_bias[:, None, :]

    def expected(
        self,
        ctx: ContextBatch,
        items: torch.Tensor,
        rows: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> ExpectedOutcome:
        """Predicted per-position expectations (B, K) of banners items (B, K) for contexts ``ctx``;
        positions (B, K): the banner position of each column (default 0..K-1)."""
        rel, buy, ext = self.head_logits(ctx, items, rows)
        return outcome_from_logits(rel, buy, ext, self.exam_at(items, positions), self.prices[items])

    def exam_at(self, items: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(K,) or (B, K) examination of each column of items (B, K): by column, or at given positions."""
        exam = self.examination()
        return exam[: items.shape[1]] if positions is None else exam[positions]


def outcome_from_logits(
    rel: torch.Tensor, buy: torch.Tensor, ext: torch.Tensor, exam: torch.Tensor, price: torch.Tensor
) -> ExpectedOutcome:
    """ExpectedOutcome (B, K) from head logits (B, K), examination (K,) and unit prices (B, K)."""
    p_click = exam * torch.sigmoid(rel)
    p_buy = p_click * torch.sigmoid(buy)
    lam = ext.clamp(max=4.0).exp()
    units = p_buy * (1 + lam)
    return ExpectedOutcome(
        click=p_click, purchase=p_buy, multi=p_buy * -torch.expm1(-lam), units=units, revenue=units * price
    )
