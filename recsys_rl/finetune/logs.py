"""Fine-tuning from logged data alone (no simulator in the loop), KL-constrained to the reference.

Each pass re-weights logged per-position rewards by item-level importance weights (top-K off-policy
correction) and penalises KL(pi || ref) along banners the current policy would draw. Behaviour item
probabilities come from the logs when they carry per-position propensities; otherwise they are the
empirical show rates of each product (exact for a context-free logging policy, as in the simulator).

On the candidate path (catalogues over ``policy.full_catalogue_max``) the input item table gets sparse
row gradients, so it takes SparseAdam and the gradient norm is clipped sparse-aware, as in the simulator
loop; the full path keeps plain Adam and torch's own clip, so its seeded numbers are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from recsys_rl import slate
from recsys_rl.config import RewardScheme, TrainConfig, per_banner
from recsys_rl.objective import AdaptiveKL, topk_offpolicy_loss
from recsys_rl.policy import BannerPolicy, trainable_copy
from recsys_rl.progress import progress_bar
from recsys_rl.records import LoggedBatch
from recsys_rl.rewards import position_rewards
from recsys_rl.sparse_optim import MixedAdam, clip_gradients


def show_rates(logs: LoggedBatch, n_products: int) -> torch.Tensor:
    """(N,) share of logged banners that showed each product (floored at one showing)."""
    counts = torch.bincount(logs.banners.items.reshape(-1), minlength=n_products).float()
    return counts.clamp_min(1.0) / len(logs)


def offline_finetune(
    reference: BannerPolicy,
    logs: LoggedBatch,
    scheme: RewardScheme,
    cfg: TrainConfig,
    seed: int,
    behaviour_item_prob: torch.Tensor | None = None,
    progress: bool = True,
    positions: torch.Tensor | None = None,
    on_check: Callable[[int, BannerPolicy], bool] | None = None,
    checks: int = 10,
) -> tuple[BannerPolicy, list[dict[str, float]]]:
    """Train a copy of ``reference`` on ``logs`` for ``cfg.total_impressions`` logged rows (several passes).

    Slot rows (``positions`` (n,) given, one product per row): each row is an item-level example; the
    reward baseline is the mean reward of its position, and ``behaviour_item_prob`` (n, 1) should be
    the logger's probability of showing the product in the banner (e.g. K x that slot's propensity).
    Item-level importance weights pi / mu are clipped at ``cfg.weight_clip``.
    on_check(step, policy) at ``checks`` evenly spaced steps (the last one included): True stops training."""
    policy = trainable_copy(reference)
    # this loop scores the full catalogue, so only the input item table's gradient is sparse rows
    sparse = [policy.item_in.weight] if policy.item_in.sparse else []
    opt = MixedAdam(policy, sparse, cfg.lr)
    k = reference.banner_size
    budget = per_banner(cfg.kl_target, k)  # nats per banner
    aim = budget * (1 - cfg.kl_margin)
    kl_ctl = AdaptiveKL(cfg.kl_beta, aim, cfg.kl_horizon, cfg.kl_adaptive)
    g = torch.Generator().manual_seed(seed)
    n, items = len(logs), logs.banners.items
    mu = (
        behaviour_item_prob
        if behaviour_item_prob is not None
        else show_rates(logs, reference.n_products)[items]
    )
    r = position_rewards(scheme, logs.outcomes)  # (n, K)
    if positions is None:
        adv = r - r.mean(0, keepdim=True)  # per-position baseline
    else:  # (n, 1) slot rows: the baseline of a row is the mean reward at its position
        n_pos = int(positions.max()) + 1
        mean = torch.zeros(n_pos).index_add_(0, positions, r[:, 0]) / torch.bincount(
            positions, minlength=n_pos
        ).clamp_min(1)
        adv = r - mean[positions][:, None]
    steps = max(1, cfg.total_impressions // cfg.minibatch_size)
    history: list[dict[str, float]] = []
    with progress_bar("offline fine-tune", steps, progress) as advance:
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * (1 - step / steps if cfg.lr_anneal else 1.0)
            idx = torch.randint(0, n, (cfg.minibatch_size,), generator=g)
            ctx = logs.contexts[idx]
            logits = policy.logits(ctx)
            with torch.no_grad():
                ref_logits = reference.logits(ctx)
                drawn = slate.gumbel_topk(logits, reference.banner_size, g)
            _, kl, _ = slate.banner_terms(logits, ref_logits, drawn)
            logp_item = torch.log_softmax(logits, -1).gather(1, items[idx])
            terms = topk_offpolicy_loss(
                logp_item,
                mu[idx],
                adv[idx],
                kl,
                k=k,
                beta=kl_ctl.beta,
                weight_clip=cfg.weight_clip,
            )
            # past the budget itself the adaptive beta reacts too slowly for a short run (measured: 3.1
            # nats against 3.0 at the end of 117 steps), so such a step only pulls back toward the reference
            past = terms.kl.item() > budget
            opt.zero_grad(set_to_none=True)
            (terms.kl if past else terms.total).backward()
            clip_gradients(policy, opt, sparse, cfg.max_grad_norm)
            opt.step()
            kl_ctl.update(terms.kl.item())
            row = {
                "loss": terms.total.item(),
                "kl": terms.kl.item(),
                "kl_per_slot": terms.kl.item() / k,
                "beta": kl_ctl.beta,
                "clip_frac": terms.clip_frac.item(),
            }
            history.append(row)
            advance(1, kl=row["kl"], beta=row["beta"])
            done = step + 1
            if on_check is not None and (done % max(1, steps // checks) == 0 or done == steps):
                if on_check(done, policy):
                    break
    return policy, history
