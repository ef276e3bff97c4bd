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
policy past K * ``train.kl_hard_limit`` (per banner; the setting is per displayed product) is never returned: the last checked state within it is (the
reference itself, KL 0, if none was). Full-catalogue path only (``policy.full_catalogue_max``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from recsys_rl.config import RewardScheme, TrainConfig, WarmStartConfig, per_banner
from recsys_rl.evaluation import divergence
from recsys_rl.finetune.reward_model import rm_finetune, rm_updates
from recsys_rl.policy import BannerPolicy, trainable_copy
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
    g = torch.Generator().manual_seed(seed + 13)
    probe = logs.contexts[torch.randperm(len(logs), generator=g)[:PROBE_CONTEXTS]]
    n_updates = rm_updates(cfg)
    kept: dict = {"state": None, "kl": 0.0, "updates": 0, "rolled_back": False}
    limit = per_banner(train.kl_hard_limit, reference.banner_size)  # nats per banner

    def check(u: int, row: dict[str, float], policy: BannerPolicy) -> bool:
        """Every ``check_every`` updates and at the end: keep the state within the hard limit, or stop."""
        if (u + 1) % ws.check_every and u + 1 != n_updates:
            return False
        policy.eval()
        kl, _ = divergence(policy.logits, reference, probe, torch.Generator().manual_seed(seed + 17))
        policy.train()
        if not kl <= limit:  # NaN counts as past the limit
            kept["rolled_back"] = True
            return True
        kept.update(
            state={k: v.detach().clone() for k, v in policy.state_dict().items()}, kl=kl, updates=u + 1
        )
        return False

    _, rows = rm_finetune(
        reference,
        model,
        logs.contexts,
        scheme,
        cfg,
        seed,
        on_update=check,
        progress=progress,
        generator=g,
        label="warm start from logs",
    )
    history = [{k: r[k] for k in ("proxy_reward", "kl", "beta")} for r in rows]
    policy = trainable_copy(reference)  # a fresh copy: no optimiser state or grads carried over
    if kept["state"] is not None:
        policy.load_state_dict(kept["state"])
    return WarmStartResult(policy, kept["kl"], kept["updates"], kept["rolled_back"], model, history)


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
