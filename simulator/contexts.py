"""Contexts: the viewed product and the last purchases, drawn from the user's consideration set.

One Gumbel-top-(1 + HISTORY_LEN) draw over the user's M candidates (noise over the candidates only,
never the catalogue) gives distinct products in sampled order: the first is the viewed product, the
next L are the purchase history, most recent first, with L uniform in [min_history, HISTORY_LEN].
"""

from __future__ import annotations

import torch

from recsys_rl.records import HISTORY_LEN, PAD, ContextBatch


def gumbel(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Standard Gumbel noise, -log(-log U), with U kept off 0 (torch.rand is already below 1)."""
    return torch.rand(shape, generator=generator).clamp_(min=1e-12).log_().neg_().log_().neg_()


def draw_contexts(
    consider_items: torch.Tensor,
    consider_logits: torch.Tensor,
    users: torch.Tensor,
    min_history: int,
    generator: torch.Generator,
) -> ContextBatch:
    """Contexts for users (B,) from per-user candidates consider_items/logits (U, M)."""
    n_cand = consider_logits.shape[1]
    keys = consider_logits.index_select(0, users)
    keys += gumbel(tuple(keys.shape), generator)
    order = torch.topk(keys, 1 + HISTORY_LEN, dim=1).indices
    picked = consider_items.view(-1).take(users[:, None] * n_cand + order)
    lengths = torch.randint(min_history, HISTORY_LEN + 1, (len(users), 1), generator=generator)
    history = picked[:, 1:].masked_fill(torch.arange(HISTORY_LEN) >= lengths, PAD)
    return ContextBatch(viewed=picked[:, 0].contiguous(), history=history)
