"""Guard rails between a trained candidate and the registry: a separate, swappable part (Pearl-style).

A candidate is registered only if its parameters are finite, its KL to the reference on recent
contexts is within the hard budget, and its estimated value is not below the current version's by more
than a tolerance; optionally, its exposure is not more concentrated than the current version's by more
than allowed (``recsys_rl.audit.guard``). The value estimate is pluggable: exact on the simulator, or off-policy (SNIPS) on
recent logs when the live path has no simulator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from recsys_rl import slate
from recsys_rl.audit.guard import ExposureGuard
from recsys_rl.config import RewardScheme
from recsys_rl.evaluation import divergence
from recsys_rl.ope.estimators import snips
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import LoggedBatch
from recsys_rl.rewards import reward

ValueFn = Callable[[BannerPolicy], float]


@dataclass
class GuardReport:
    passed: bool
    kl: float
    value: float
    current_value: float
    reasons: list[str] = field(default_factory=list)
    reward_model_value: float = math.nan  # the reward model's value of the candidate, when checked
    exposure: dict[str, float] = field(default_factory=dict)  # the exposure guard's figures, when checked


def finite(policy: BannerPolicy) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in policy.parameters())


@dataclass
class GuardRails:
    kl_hard_limit: float
    tolerance: float = 0.02  # relative drop of the value allowed before refusing
    min_gain: float = 0.0  # > 0: the candidate must beat the current value by this share instead
    # optional: a learned reward model's value on the recent contexts (recsys_rl.reward_model.guard)
    reward_model_value: Callable[[LoggedBatch], ValueFn] | None = None
    reward_model_tolerance: float = 0.02
    # optional: refuse a version that concentrates exposure (recsys_rl.audit.guard)
    exposure: ExposureGuard | None = None

    def check(
        self,
        candidate: BannerPolicy,
        current: BannerPolicy,
        reference: BannerPolicy,
        logged: LoggedBatch,
        value_fn: ValueFn,
        seed: int = 0,
    ) -> GuardReport:
        reasons = []
        if not finite(candidate):
            return GuardReport(False, math.nan, math.nan, math.nan, ["non-finite parameters"])
        scorer = candidate if candidate.uses_candidates else candidate.logits  # over its candidates
        kl, _ = divergence(scorer, reference, logged.contexts, torch.Generator().manual_seed(seed))
        if not math.isfinite(kl) or kl > self.kl_hard_limit:
            reasons.append(f"KL to reference {kl:.3f} above hard limit {self.kl_hard_limit}")
        value, current_value = value_fn(candidate), value_fn(current)
        if not math.isfinite(value):
            reasons.append("value estimate is not finite")
        elif self.min_gain > 0 and value < current_value + self.min_gain * abs(current_value):
            reasons.append(f"value {value:.4f} not above current {current_value:.4f} by {self.min_gain:.1%}")
        elif self.min_gain <= 0 and value < current_value - self.tolerance * abs(current_value):
            reasons.append(
                f"value {value:.4f} below current {current_value:.4f} by more than {self.tolerance:.0%}"
            )
        rm_value = math.nan
        if self.reward_model_value is not None:
            rm_fn = self.reward_model_value(logged)
            rm_value, rm_current = rm_fn(candidate), rm_fn(current)
            if not rm_value >= rm_current - self.reward_model_tolerance * abs(rm_current):
                reasons.append(
                    f"reward-model value {rm_value:.4f} below current {rm_current:.4f} by more than "
                    f"{self.reward_model_tolerance:.0%}"
                )
        exposure = {}
        if self.exposure is not None:
            exposure, why = self.exposure.check(candidate, current, logged.contexts, seed)
            reasons += why
        return GuardReport(not reasons, kl, value, current_value, reasons, rm_value, exposure)


def iips_value(
    logged: LoggedBatch, scheme: RewardScheme, positions, behaviour_marginals, banner_size: int, seed: int = 0
) -> ValueFn:
    """Off-policy value per banner of a policy on slot rows (one displayed item per row): IIPS with the
    logged slot propensities, the position-wise estimator slot rows allow (whole-banner SNIPS needs banners)."""
    from recsys_rl.ope.pipeline import evaluate_policy

    @torch.no_grad()
    def value(policy: BannerPolicy) -> float:
        res = evaluate_policy(
            logged,
            policy.logits,
            scheme,
            ["iips"],
            behaviour_marginals=behaviour_marginals,
            positions=positions,
            banner_size=banner_size,
            n_samples=32,
            seed=seed,
        )
        return res.estimates["iips"].value

    return value


def snips_value(logged: LoggedBatch, scheme: RewardScheme, temperature: float = 1.0) -> ValueFn:
    """Off-policy value of a policy on logged banners: self-normalised IPS on whole-banner propensities."""
    rewards = reward(scheme, logged.outcomes).numpy()
    behaviour = logged.banners.log_prob.double().exp().numpy()

    @torch.no_grad()
    def value(policy: BannerPolicy) -> float:
        if policy.uses_candidates:  # the policy as it serves: over its candidates
            logp = policy.banner_log_prob(logged.contexts, logged.banners.items, temperature).double()
        else:
            logp = slate.log_prob(policy.logits(logged.contexts).double(), logged.banners.items, temperature)
        return snips(rewards, np.exp(logp.numpy()), behaviour).value

    return value
