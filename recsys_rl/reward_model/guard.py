"""The reward model as one more guard rail of the online trainer (``online.reward_model``, off by default).

A candidate version is valued by the reward model on the recent logged contexts (its expected reward of
banners the candidate would sample, a fixed seed so candidate and current see the same noise) and is
refused when that value is below the current version's by more than ``online.reward_model_tolerance``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from recsys_rl.config import RewardScheme
from recsys_rl.guard_rails import ValueFn
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import LoggedBatch
from recsys_rl.reward_model.model import BannerRewardModel
from recsys_rl.reward_model.packaging import check_catalogue, load_reward_model
from recsys_rl.reward_model.scoring import check_scheme, policy_value


def reward_model_guard(
    model: BannerRewardModel | str, scheme: RewardScheme, reference: BannerPolicy, seed: int = 0
) -> Callable[[LoggedBatch], ValueFn]:
    """logged -> (policy -> the reward model's value on logged.contexts); checks catalogue and scheme now."""
    if isinstance(model, str):
        model = load_reward_model(model, "online.reward_model")
    check_catalogue(model, reference.n_products, "the reference policy", "online.reward_model")
    check_scheme(model, scheme)

    def for_logs(logged: LoggedBatch) -> ValueFn:
        def value(policy: BannerPolicy) -> float:
            return policy_value(
                model, scheme, policy.logits, logged.contexts, torch.Generator().manual_seed(seed)
            )

        return value

    return for_logs
