"""Warm start from logged data: fine-tune against a reward model fitted on the logs, before live traffic.

The reference was trained supervised on the logs (imitating what users bought); the same logs also say
how users *responded* to the banners they were shown. A reward model fitted on them
(``recsys_rl.reward_model``) scores banners the policy samples for the logged contexts, and the
KL-constrained ``Learner`` (RLOO advantages, PPO, adaptive beta) moves the policy against it: the
RLHF step 3 on logs alone, spending no live impression. The live fine-tune then starts from this
policy, with the KL still measured to the frozen reference.

A learned reward is wrong far from the logged data, and optimising it hard is the failure the KL term
exists for: the warm start aims at its own, smaller KL budget (``warm_start.kl_target``) and checks the
exact per-position KL to the reference on held logged contexts every ``check_every`` updates. A
policy past ``train.kl_hard_limit`` is never returned: the last checked state within it is (the
reference itself, KL 0, if none was). Full-catalogue path only (``policy.full_catalogue_max``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from recsys_rl.config import RewardScheme, TrainConfig, WarmStartConfig
from recsys_rl.evaluation import divergence
from recsys_rl.finetune.reward_model import scored_batch
from recsys_rl.learner import Learner
from recsys_rl.policy import BannerPolicy, trainable_copy
from recsys_rl.progress import progress_bar
from recsys_rl.records import LoggedBatch
from recsys_rl.reward_model import RewardModelConfig, fit_reward_model
from recsys_rl.reward_model.model import BannerRewardModel

PROBE_CONTEXTS = 2048
"""Logged contexts the KL check runs on (exact per position, along banners drawn from the policy)."""


@dataclass
class WarmStartResult:
    policy: BannerPolicy  # trainable, KL to the reference <= train.kl_hard_limit on the probe contexts
    kl: float  # its measured KL to the reference (nats per banner)
    updates: int  # updates kept (up to the last checked state within the hard limit)
    rolled_back: bool  # True if a later state went past the hard limit and was discarded
    reward_model: BannerRewardModel | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def warm_start_from_model(
    reference: BannerPolicy,
    model: BannerRewardModel,
    logs: LoggedBatch,
    scheme: RewardScheme,
    train: TrainConfig,
    ws: WarmStartConfig,
    seed: int,
    progress: bool = False,
) -> WarmStartResult:
    """Fine-tune a copy of ``reference`` against ``model`` on the contexts of ``logs`` (see module doc)."""
    if reference.uses_candidates:
        raise ValueError(
            f"warm_start.enabled: the warm start scores the full catalogue; {reference.n_products} products "
            "is above policy.full_catalogue_max"
        )
    cfg = train.model_copy(
        update={
            "total_impressions": ws.virtual_impressions,
            "kl_target": ws.kl_target,
            "lr": ws.lr,
            "kl_beta": ws.kl_beta,
            "contexts_per_batch": ws.contexts_per_batch,
            "banners_per_context": max(2, train.banners_per_context),
        }
    )
    policy = trainable_copy(reference)
    learner = Learner(policy, reference, scheme, cfg, seed)
    g = torch.Generator().manual_seed(seed + 13)
    probe = logs.contexts[torch.randperm(len(logs), generator=g)[:PROBE_CONTEXTS]]
    contexts = logs.contexts
    group = cfg.banners_per_context
    n_updates = max(1, cfg.total_impressions // (cfg.contexts_per_batch * group))
    good, good_kl, good_updates, rolled_back, history = None, 0.0, 0, False, []

    def measured_kl() -> float:
        policy.eval()
        kl, _ = divergence(policy.logits, reference, probe, torch.Generator().manual_seed(seed + 17))
        policy.train()
        return kl

    with progress_bar("warm start from logs", n_updates, progress) as advance:
        for u in range(1, n_updates + 1):
            learner.set_progress((u - 1) / n_updates)
            idx = torch.randint(0, len(contexts), (cfg.contexts_per_batch,), generator=g)
            batch, rewards = scored_batch(policy, model, scheme, contexts[idx], group, g)
            stats = learner.update(batch, group, rewards=rewards)
            history.append({"proxy_reward": stats["reward"], "kl": stats["loss/kl"], "beta": stats["beta"]})
            advance(1, proxy=stats["reward"], kl=stats["loss/kl"])
            if u % ws.check_every and u != n_updates:
                continue
            kl = measured_kl()
            if not kl <= train.kl_hard_limit:  # NaN counts as past the limit
                rolled_back = True
                break
            good = {k: v.detach().clone() for k, v in policy.state_dict().items()}
            good_kl, good_updates = kl, u
    policy = trainable_copy(reference)  # a fresh copy: no optimiser state or grads carried over
    if good is not None:
        policy.load_state_dict(good)
    return WarmStartResult(policy, good_kl, good_updates, rolled_back, model, history)


def warm_start(
    reference: BannerPolicy,
    logs: LoggedBatch,
    scheme: RewardScheme,
    train: TrainConfig,
    ws: WarmStartConfig,
    seed: int,
    progress: bool = False,
) -> WarmStartResult:
    """Fit a reward model on ``logs`` (20% held out, early stopping), then ``warm_start_from_model``."""
    fit = fit_reward_model(logs, reference.n_products, RewardModelConfig(seed=seed), progress=progress)
    return warm_start_from_model(reference, fit.model, logs, scheme, train, ws, seed, progress)
