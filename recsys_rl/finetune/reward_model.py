"""Fine-tuning a policy against a learned reward model on logged contexts (RLHF step 3 from logs alone).

Each update draws ``contexts_per_batch`` logged contexts, samples ``banners_per_context`` banners for
each from the current policy (their exact log-propensities as the behaviour), scores them with the
reward model's expected reward under the scheme (no sampling noise), and hands them to the same
``Learner`` the simulator and live loops use: RLOO advantages within each context, PPO ratio, exact
per-position KL to the reference with adaptive beta. Impressions spent are banners scored; no user sees
them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from recsys_rl import slate
from recsys_rl.config import RewardScheme, TrainConfig
from recsys_rl.learner import Learner
from recsys_rl.policy import BannerPolicy, trainable_copy
from recsys_rl.progress import progress_bar
from recsys_rl.records import BannerBatch, ContextBatch, LoggedBatch, OutcomeBatch
from recsys_rl.reward_model.model import BannerRewardModel
from recsys_rl.reward_model.packaging import check_catalogue
from recsys_rl.reward_model.scoring import banner_rewards, check_scheme


@torch.no_grad()
def scored_batch(
    policy: BannerPolicy,
    model: BannerRewardModel,
    scheme: RewardScheme,
    ctx: ContextBatch,
    group: int,
    generator: torch.Generator,
) -> tuple[LoggedBatch, torch.Tensor]:
    """(batch of C*group banners sampled from ``policy``, their (C*group,) proxy rewards)."""
    logits = policy.logits(ctx).repeat_interleave(group, 0)
    items = slate.gumbel_topk(logits, policy.banner_size, generator)
    rows = torch.arange(len(ctx)).repeat_interleave(group)
    rewards = banner_rewards(model, scheme, ctx, items, rows)
    zeros = torch.zeros(items.shape)
    batch = LoggedBatch(
        ctx.repeat_interleave(group),
        BannerBatch(items, slate.log_prob(logits, items)),
        OutcomeBatch(zeros, zeros, zeros),
    )  # outcomes unused: rewards given
    return batch, rewards


def rm_updates(cfg: TrainConfig) -> int:
    """Updates ``rm_finetune`` makes for ``cfg``: ``cfg.total_impressions`` banners, at least one update."""
    return max(1, cfg.total_impressions // (cfg.contexts_per_batch * max(2, cfg.banners_per_context)))


def rm_finetune(
    reference: BannerPolicy,
    model: BannerRewardModel,
    contexts: ContextBatch,
    scheme: RewardScheme,
    cfg: TrainConfig,
    seed: int,
    on_update: Callable[[int, dict[str, float], BannerPolicy], bool | None] | None = None,
    progress: bool = True,
    start: BannerPolicy | None = None,
    beta: float | None = None,
    generator: torch.Generator | None = None,
    label: str | None = None,
) -> tuple[BannerPolicy, list[dict[str, float]]]:
    """Train a copy of ``reference`` against ``model`` on ``contexts`` for ``cfg.total_impressions`` banners.

    ``start`` / ``beta``: continue from a policy this function returned and the KL coefficient its run
    ended with (its last history row's ``beta``), e.g. to let a large budget be reached; the KL stays
    measured against ``reference`` and the learning-rate schedule restarts (a warm restart).
    ``on_update(u, row, policy)`` sees each update (0-based) after it is made; returning True stops the run
    there (the warm start's KL check). ``generator``: the draws of contexts and banners (default seeded
    from ``seed``); ``label``: the progress bar's.
    """
    check_catalogue(model, reference.n_products, "the reference policy")
    check_scheme(model, scheme)
    policy = trainable_copy(start if start is not None else reference)
    learner = Learner(policy, reference, scheme, cfg, seed)
    if beta is not None:
        learner.kl_ctl.beta = beta
    g = generator if generator is not None else torch.Generator().manual_seed(seed + 11)
    group = max(2, cfg.banners_per_context)
    per_update = cfg.contexts_per_batch * group
    n_updates = rm_updates(cfg)
    history: list[dict[str, float]] = []
    with progress_bar(label or f"fine-tune vs reward model ({scheme.name})", n_updates, progress) as advance:
        for u in range(n_updates):
            learner.set_progress(u / n_updates)
            idx = torch.randint(0, len(contexts), (cfg.contexts_per_batch,), generator=g)
            batch, rewards = scored_batch(policy, model, scheme, contexts[idx], group, g)
            stats = learner.update(batch, group, rewards=rewards)
            row = {
                "proxy_reward": stats["reward"],
                "kl": stats["loss/kl"],
                "beta": stats["beta"],
                "impressions": float((u + 1) * per_update),
            }
            history.append(row)
            advance(1, proxy=row["proxy_reward"], kl=row["kl"], beta=row["beta"])
            if on_update and on_update(u, row, policy):
                break
    return policy.eval(), history
