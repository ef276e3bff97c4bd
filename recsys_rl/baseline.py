"""Supervised training of the reference recommender from logged data.

Two kinds of target, both "what this user bought/clicked next given the context":
- logged feedback: each clicked product of a logged banner (weight 1 + purchase_weight if bought);
- next purchase: the most recent past purchase, predicted from the viewed product and older purchases.
Loss: weighted softmax cross-entropy over the whole catalogue. The result is frozen as pi_ref.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recsys_rl.config import BaselineConfig, PolicyConfig
from recsys_rl.policy import BannerPolicy
from recsys_rl.progress import progress_bar
from recsys_rl.records import PAD, ContextBatch, LoggedBatch


def supervised_examples(
    logs: LoggedBatch, cfg: BaselineConfig
) -> tuple[ContextBatch, torch.Tensor, torch.Tensor]:
    """(contexts, targets (M,), weights (M,)) built with array ops from the logs."""
    ctx, out, items = logs.contexts, logs.outcomes, logs.banners.items
    row, pos = (out.clicks > 0).nonzero(as_tuple=True)  # one example per click
    fb_w = 1.0 + cfg.purchase_weight * (out.units[row, pos] > 0).float()
    fb_ctx = ctx[row]
    parts = [(fb_ctx.viewed, fb_ctx.history, items[row, pos], fb_w)]
    if cfg.history_weight > 0:
        has = ctx.history[:, 0] != PAD
        h = ctx.history[has]
        older = torch.cat([h[:, 1:], torch.full((len(h), 1), PAD, dtype=h.dtype)], dim=1)
        parts.append((ctx.viewed[has], older, h[:, 0], torch.full((len(h),), cfg.history_weight)))
    viewed, history, targets, weights = (torch.cat(x) for x in zip(*parts, strict=False))
    return ContextBatch(viewed, history), targets, weights


def train_baseline(
    logs: LoggedBatch,
    n_products: int,
    policy_cfg: PolicyConfig,
    cfg: BaselineConfig,
    seed: int,
    progress: bool = True,
) -> BannerPolicy:
    """Fit a BannerPolicy to predict logged clicks/purchases and next purchases; returns it frozen."""
    torch.manual_seed(seed)  # parameter init
    g = torch.Generator().manual_seed(seed)
    policy = BannerPolicy(n_products, policy_cfg.embed_dim, policy_cfg.hidden_dim)
    ctx, targets, weights = supervised_examples(logs, cfg)
    if (targets < 0).any() or (targets >= n_products).any():
        raise ValueError(f"logs: product ids must be in [0, {n_products}); found {int(targets.max())}")
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    m = len(targets)
    steps = cfg.epochs * ((m + cfg.batch_size - 1) // cfg.batch_size)
    with progress_bar("baseline", steps, progress) as advance:
        for _ in range(cfg.epochs):
            order = torch.randperm(m, generator=g)
            for i in range(0, m, cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                logits = policy.logits(ctx[idx])
                loss = (
                    F.cross_entropy(logits, targets[idx], reduction="none") * weights[idx]
                ).sum() / weights[idx].sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                advance(1, loss=loss.item())
    return policy.frozen_copy()
