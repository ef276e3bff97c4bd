"""The closed feedback loop in simulation: serve -> log -> retrain the reference -> fine-tune -> serve.

Round 0 fine-tunes against the reference trained on the behaviour policy's logs. Each later round
serves the current policy to ``loop.impressions_per_round`` fresh users (one banner each, with the
exploration floor, propensities logged), retrains the reference incrementally on those logs (a copy
of the last reference trained ``loop.retrain_epochs`` passes over the new rows: over the rounds it has
seen every log so far, as a production retrain does), and fine-tunes a copy of it against the anchor
(the new reference, or round 0's). Every round is judged by one fixed ``Evaluator`` built on round 0's
reference, so gap closed and the audit compare across rounds and across variants.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from recsys_rl.audit.exposure import banner_exposure
from recsys_rl.baseline import train_baseline
from recsys_rl.config import LoopConfig, RewardScheme, RunConfig
from recsys_rl.env import Environment
from recsys_rl.evaluation import Evaluator
from recsys_rl.finetune.environment import finetune
from recsys_rl.mitigation.debias import exposure_weights
from recsys_rl.mitigation.exploration import serve
from recsys_rl.objective import exposure_cap_penalty
from recsys_rl.policy import BannerPolicy, trainable_copy
from recsys_rl.progress import progress_bar
from recsys_rl.records import LoggedBatch
from recsys_rl.rewards import reward


def _round_train_cfg(cfg: RunConfig):
    return cfg.train.model_copy(
        update={"total_impressions": cfg.loop.finetune_impressions, "eval_every": 10**9}
    )


def _reward_fn(
    scheme: RewardScheme, loop: LoopConfig, examination: torch.Tensor, exposure: torch.Tensor | None
) -> Callable[[LoggedBatch], torch.Tensor] | None:
    """The scheme's reward less the exposure term (``loop.exposure_cap``), or None when it is off."""
    if loop.exposure_cap <= 0 or exposure is None:
        return None

    def fn(batch: LoggedBatch) -> torch.Tensor:
        penalty = exposure_cap_penalty(batch.banners.items, examination, exposure, loop.exposure_cap)
        return reward(scheme, batch.outcomes) - loop.exposure_weight * penalty

    return fn


def run_loop(
    cfg: RunConfig,
    env: Environment,
    evaluator: Evaluator,
    reference0: BannerPolicy,
    logs0: LoggedBatch,
    scheme: RewardScheme,
    examination: torch.Tensor,
    on_round: Callable[[int, dict[str, float]], None],
    progress: bool = True,
) -> BannerPolicy:
    """Rounds 0..loop.rounds; ``on_round(r, metrics)`` gets each round's evaluation of its fine-tuned
    policy (with the audit when the evaluator has one). Returns the last round's policy."""
    loop, n = cfg.loop, env.n_products
    train_cfg = _round_train_cfg(cfg)
    base_cfg = cfg.baseline.model_copy(update={"epochs": loop.retrain_epochs})
    g = torch.Generator().manual_seed(cfg.seed + 4242)
    logged_exposure = banner_exposure(logs0.banners.items, examination, n) * len(logs0)  # (N,) sums
    reference, policy, served_exposure = reference0, reference0, None
    with progress_bar("closed loop", loop.rounds + 1, progress) as advance:
        for r in range(loop.rounds + 1):
            if r > 0:
                served = serve(policy, env, loop.impressions_per_round, loop.exploration_floor, g)
                served_exposure = banner_exposure(served.banners.items, examination, n)
                logged_exposure += served_exposure * len(served)
                weights = None
                if loop.debias:
                    b = served.banners.items
                    weights = exposure_weights(b, served.outcomes.clicks, logged_exposure, loop.weight_clip)
                reference = train_baseline(
                    served,
                    n,
                    cfg.policy,
                    base_cfg,
                    cfg.seed + r,
                    False,
                    click_weights=weights,
                    init=reference,
                )
            anchor = reference0 if loop.anchor == "round0" else reference
            policy = trainable_copy(reference)
            fn = _reward_fn(scheme, loop, examination, served_exposure)
            res = finetune(
                policy, anchor, env, scheme, train_cfg, evaluator, cfg.seed + r, progress=False, reward_fn=fn
            )
            policy.eval()
            on_round(r, res.final)
            advance(1, gap=res.final["oracle_gap_closed"], gini=res.final.get("exposure_gini", float("nan")))
    return policy
