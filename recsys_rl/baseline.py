"""Supervised training of the reference recommender from logged data.

Two kinds of target, both "what this user bought/clicked next given the context":
- logged feedback: each clicked product of a logged banner (weight 1 + purchase_weight if bought);
- next purchase: the most recent past purchase, predicted from the viewed product and older purchases;
- re-showing (``context_weight`` > 0): the viewed product itself, where the shop's users come back to it.
Loss: weighted softmax cross-entropy over the whole catalogue for small N; above
``cfg.sampled_negatives`` products a sampled softmax (``sampled_softmax_loss``): S shared negatives per
batch drawn from Q = the smoothed target frequency, every logit corrected by -log(S Q_j) (log-Q
correction, Bengio & Senecal 2008; Yi et al. 2019) so the estimate is of the full softmax, not of a
popularity-biased one. O(B S) per step instead of O(B N). The result is frozen as pi_ref.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from recsys_rl.candidates.sources import build_sources
from recsys_rl.config import BaselineConfig, PolicyConfig, SourcesConfig
from recsys_rl.policy import BannerPolicy
from recsys_rl.progress import progress_bar
from recsys_rl.records import PAD, ContextBatch, LoggedBatch
from recsys_rl.sparse_optim import MixedAdam


def supervised_examples(
    logs: LoggedBatch, cfg: BaselineConfig, click_weights: torch.Tensor | None = None
) -> tuple[ContextBatch, torch.Tensor, torch.Tensor]:
    """(contexts, targets (M,), weights (M,)) built with array ops from the logs.

    click_weights: (B, K) multiplier of each logged click's weight (e.g. propensity weights), or None."""
    ctx, out, items = logs.contexts, logs.outcomes, logs.banners.items
    row, pos = (out.clicks > 0).nonzero(as_tuple=True)  # one example per click
    fb_w = 1.0 + cfg.purchase_weight * (out.units[row, pos] > 0).float()
    if click_weights is not None:
        fb_w = fb_w * click_weights[row, pos]
    parts = [(ctx[row], items[row, pos], fb_w)]
    if cfg.history_weight > 0:
        has = ctx.history[:, 0] != PAD
        h_ctx = ctx[has]
        h = h_ctx.history
        older = torch.cat([h[:, 1:], torch.full((len(h), 1), PAD, dtype=h.dtype)], dim=1)
        h_ctx = ContextBatch(h_ctx.viewed, older, h_ctx.user_features, h_ctx.user_categories)
        parts.append((h_ctx, h[:, 0], torch.full((len(h),), cfg.history_weight)))
    if cfg.context_weight > 0:  # re-showing: the viewed product is a target of its own context
        v_ctx = ctx[ctx.viewed != PAD]
        parts.append((v_ctx, v_ctx.viewed, torch.full((len(v_ctx),), cfg.context_weight)))
    contexts, targets, weights = zip(*parts, strict=True)
    return _concat(contexts), torch.cat(targets), torch.cat(weights)


def attach_sources(
    policy: BannerPolicy, logs: LoggedBatch, cfg: SourcesConfig, item_category: torch.Tensor | None
) -> None:
    """Give a candidate-path policy the extra sources of these logs; their weights stay 0 in the
    reference (the fine-tune learns them from rewards, as the context weights)."""
    sources = build_sources(
        logs,
        policy.n_products,
        cfg.cooccurrence,
        cfg.neighbours,
        cfg.category,
        cfg.category_products,
        cfg.popular,
        item_category,
    )
    if sources.width:
        policy.attach_sources(sources)
        policy.source_weights.requires_grad_(False)


def _concat(parts: tuple[ContextBatch, ...]) -> ContextBatch:
    """Contexts stacked row-wise; the optional feature fields stay None when absent."""

    def cat(name):
        values = [getattr(c, name) for c in parts]
        return None if values[0] is None else torch.cat(values)

    return ContextBatch(cat("viewed"), cat("history"), cat("user_features"), cat("user_categories"))


QUEUE_SMOOTHING = 0.1
"""Share of the proposal mass spread uniformly over the catalogue, so every product can be a negative."""


def proposal(targets: torch.Tensor, weights: torch.Tensor, n_products: int) -> torch.Tensor:
    """(N,) sampling distribution of negatives: weighted target frequency, smoothed, sums to 1."""
    freq = torch.bincount(targets, weights=weights.double(), minlength=n_products)
    freq = freq / freq.sum()
    return ((1 - QUEUE_SMOOTHING) * freq + QUEUE_SMOOTHING / n_products).float()


def sampled_softmax_loss(
    policy: BannerPolicy,
    ctx: ContextBatch,
    targets: torch.Tensor,
    weights: torch.Tensor,
    log_q: torch.Tensor,
    negatives: torch.Tensor,
) -> torch.Tensor:
    """Weighted sampled-softmax cross-entropy with log-Q correction.

    targets, weights: (B,); log_q: (N,) log proposal; negatives: (S,) ids drawn from it. Each row's
    classes are [its target, the S shared negatives], logits s_j - log(S Q_j); a negative equal to
    the row's target is masked out (accidental hit).
    """
    q = policy.query(ctx)  # (B, D)
    correction = torch.log(torch.tensor(float(len(negatives))))
    pos = (q * policy.item_rows(targets)).sum(-1) + policy.item_bias[targets] - log_q[targets] - correction
    neg = q @ policy.item_rows(negatives).T + policy.item_bias[negatives] - log_q[negatives] - correction
    if policy.context_features:  # the in-context offsets are part of every product's logit
        pos = pos + policy.context_offsets(ctx, targets.unsqueeze(1))[:, 0]
        neg = neg + policy.context_offsets(ctx, negatives.expand(len(targets), -1))
    neg = neg.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))  # (B, S)
    logits = torch.cat([pos.unsqueeze(1), neg], 1)
    nll = -torch.log_softmax(logits, 1)[:, 0]
    return (nll * weights).sum() / weights.sum()


def train_baseline(
    logs: LoggedBatch,
    n_products: int,
    policy_cfg: PolicyConfig,
    cfg: BaselineConfig,
    seed: int,
    progress: bool = True,
    banner_size: int | None = None,
    categorical_vocab: list[list[str]] | None = None,
    on_epoch: Callable[[int, BannerPolicy], bool] | None = None,
    click_weights: torch.Tensor | None = None,
    init: BannerPolicy | None = None,
    item_category: torch.Tensor | None = None,
) -> BannerPolicy:
    """Fit a BannerPolicy to predict logged clicks/purchases and next purchases; returns it frozen.

    banner_size: K of the policy (default: the logged banners'; give it for slot rows, whose batch
    holds one product per row); user features are used when the logged contexts have them;
    categorical_vocab: the vocabulary the contexts' categorical codes were made with (saved in the policy);
    on_epoch(epoch, policy) after each pass (epoch from 1, the policy in training): True stops training;
    click_weights: (B, K) multiplier of each logged click's weight (``supervised_examples``);
    init: continue training a copy of this policy (incremental retraining on new logs) instead of a fresh one;
    item_category: (N,) long category of each product (the item table), for the category source."""
    torch.manual_seed(seed)  # parameter init
    g = torch.Generator().manual_seed(seed)
    policy = BannerPolicy(
        n_products,
        policy_cfg.embed_dim,
        policy_cfg.hidden_dim,
        candidates=policy_cfg.candidates,
        retrieval=policy_cfg.retrieval,
        nprobe=policy_cfg.nprobe,
        full_catalogue_max=policy_cfg.full_catalogue_max,
        context_bonus=policy_cfg.context_bonus,
        context_features=policy_cfg.context_features,
        banner_size=banner_size or logs.banners.items.shape[1],
        n_user_features=0 if logs.contexts.user_features is None else logs.contexts.user_features.shape[1],
        categorical_vocab=categorical_vocab,
    )
    if init is not None:
        policy.load_state_dict(init.state_dict())
    if policy.context_features and not cfg.learn_context_weights:
        # measured: purchase targets teach "never re-show" (weights of -1 to -2 nats) even where
        # re-showing wins, and a fine-tune cannot undo that within its KL budget; left at 0 the reference
        # scores as without them and the fine-tune learns them from rewards
        policy.context_weights.requires_grad_(False)
    if policy.uses_candidates:
        attach_sources(policy, logs, policy_cfg.sources, item_category)
    ctx, targets, weights = supervised_examples(logs, cfg, click_weights)
    if (targets < 0).any() or (targets >= n_products).any():
        raise ValueError(f"logs: product ids must be in [0, {n_products}); found {int(targets.max())}")
    opt = MixedAdam(policy, policy.sparse_parameters(), cfg.lr, weight_decay=cfg.weight_decay)
    sampled = 0 < cfg.sampled_negatives < n_products
    if policy.uses_candidates and not sampled:
        raise ValueError(
            f"baseline.sampled_negatives: must be in (0, {n_products}) for a {n_products}-product catalogue "
            "(the full softmax is only for catalogues up to policy.full_catalogue_max)"
        )
    if sampled:
        q_dist = proposal(targets, weights, n_products)
        log_q = q_dist.log()
    m = len(targets)
    steps = cfg.epochs * ((m + cfg.batch_size - 1) // cfg.batch_size)
    with progress_bar("baseline", steps, progress) as advance:
        for epoch in range(1, cfg.epochs + 1):
            order = torch.randperm(m, generator=g)
            for i in range(0, m, cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                if sampled:
                    neg = torch.multinomial(q_dist, cfg.sampled_negatives, replacement=True, generator=g)
                    loss = sampled_softmax_loss(policy, ctx[idx], targets[idx], weights[idx], log_q, neg)
                else:
                    logits = policy.logits(ctx[idx])
                    loss = (
                        F.cross_entropy(logits, targets[idx], reduction="none") * weights[idx]
                    ).sum() / weights[idx].sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                advance(1, loss=loss.item())
            if on_epoch is not None and on_epoch(epoch, policy):
                break
    ref = policy.frozen_copy()
    ref.refresh_candidates()  # a new version: (re)build its candidate index
    return ref
