"""Preference fine-tuning from logs: trained on a known preference, the policy moves toward it."""

from __future__ import annotations

import pytest
import torch

from recsys_rl.config import PreferenceConfig, load_reward
from recsys_rl.finetune.preference import preference_finetune
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import BannerBatch, ContextBatch, LoggedBatch, OutcomeBatch

LIKED = 7


def known_preference_logs(n: int = 2000, n_products: int = 12) -> LoggedBatch:
    """Uniformly random banners of 5; product LIKED is bought (one unit) wherever it is shown."""
    g = torch.Generator().manual_seed(0)
    items = torch.rand(n, n_products, generator=g).argsort(1)[:, :5]
    bought = (items == LIKED).float()
    log_prob = torch.full(
        (n,), -float(torch.log(torch.arange(n_products - 4, n_products + 1).double()).sum())
    )
    ctx = ContextBatch(torch.randint(0, 4, (n,), generator=g), torch.full((n, 3), -1))
    return LoggedBatch(ctx, BannerBatch(items, log_prob), OutcomeBatch(bought, bought, bought))


@pytest.mark.parametrize("objective", ["dpo", "ipo", "kto", "sdpo"])
@pytest.mark.parametrize("weighting", ["none", "importance"])
def test_training_on_a_known_preference_moves_the_policy_toward_it(objective, weighting):
    torch.manual_seed(0)
    ref = BannerPolicy(12, embed_dim=8, hidden_dim=16).frozen_copy()
    logs = known_preference_logs()
    cfg = PreferenceConfig(
        objective=objective, weighting=weighting, beta=0.5, steps=60, minibatch_size=64, lr=1e-2
    )
    policy, history = preference_finetune(ref, logs, load_reward("purchase"), cfg, seed=0, progress=False)
    ctx = logs.contexts[:256]
    with torch.no_grad():
        p_ref = torch.softmax(ref.logits(ctx), -1)[:, LIKED].mean()
        p = torch.softmax(policy.logits(ctx), -1)[:, LIKED].mean()
    assert p > 1.5 * p_ref  # IPO stops at a log-ratio gap of 1 / (2 beta): a bounded move
    last = history[-1]
    assert last["kl"] > 0 and last["rewards/margins"] > 0 and last["rewards/accuracies"] > 0.5
    assert {"rewards/chosen", "rewards/rejected", "loss", "kl_per_slot"} <= set(last)


def test_logs_without_any_preference_are_refused_naming_the_objective():
    logs = known_preference_logs(100)
    logs.outcomes.clicks.zero_(), logs.outcomes.units.zero_()
    ref = BannerPolicy(12, embed_dim=8, hidden_dim=16).frozen_copy()
    with pytest.raises(ValueError, match="preference.objective: sdpo finds no preference"):
        preference_finetune(ref, logs, load_reward("purchase"), PreferenceConfig(steps=1), 0, progress=False)
