"""The planted-bias check: does the audit find a known popularity boost, and does debiasing remove it?

A reference gets delta planted on its logits (``mitigation.planted``); the audit measures the
popularity lift of its served banners for each delta. The boosted reference then serves logs, and two
baselines are trained on them: plainly and with the clipped, self-normalised inverse-exposure weights
(``mitigation.debias``). ``removed`` = 1 - (lift(debiased) - lift(reference)) / (lift(plain) -
lift(reference)): the share of the lift the plain retrain inherited that the debiased one does not.
"""

from __future__ import annotations

import torch

from recsys_rl.audit.exposure import banner_exposure
from recsys_rl.audit.on_env import EnvAudit
from recsys_rl.audit.world import AuditWorld
from recsys_rl.baseline import train_baseline
from recsys_rl.config import RunConfig, load_reward
from recsys_rl.env import Environment
from recsys_rl.evaluation import make_eval_set
from recsys_rl.mitigation.debias import exposure_weights
from recsys_rl.mitigation.exploration import serve
from recsys_rl.mitigation.planted import PopularityBoosted
from recsys_rl.policy import BannerPolicy


def planted_bias_check(
    cfg: RunConfig,
    env: Environment,
    world: AuditWorld,
    reference: BannerPolicy,
    deltas: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0),
    logged: int = 20_000,
    eval_users: int = 1024,
) -> dict[str, float]:
    """Figures: ``lift_delta=<d>`` per delta, ``lift_plain``, ``lift_debiased``, ``removed``."""
    scheme = load_reward(cfg.reward)
    es = make_eval_set(env, eval_users, cfg.seed + 1000)
    audit = EnvAudit(env, world, es.users, es.contexts, scheme, cfg.seed)

    def lift(policy) -> float:
        return audit.of_policy(policy.logits, reference.banner_size)[0]["popularity_lift"]

    out = {f"lift_delta={d:g}": lift(PopularityBoosted(reference, world.popularity, d)) for d in deltas}
    biased = PopularityBoosted(reference, world.popularity, max(deltas))
    logs = serve(biased, env, logged, 0.0, torch.Generator().manual_seed(cfg.seed + 17))
    exposure = banner_exposure(logs.banners.items, world.examination, env.n_products)
    weights = exposure_weights(logs.banners.items, logs.outcomes.clicks, exposure, cfg.loop.weight_clip)
    n = env.n_products
    plain = train_baseline(logs, n, cfg.policy, cfg.baseline, cfg.seed, False)
    debiased = train_baseline(logs, n, cfg.policy, cfg.baseline, cfg.seed, False, click_weights=weights)
    base = out["lift_delta=0"] if 0.0 in deltas else lift(reference)
    out["lift_plain"], out["lift_debiased"] = lift(plain), lift(debiased)
    inherited = out["lift_plain"] - base
    out["removed"] = 1 - (out["lift_debiased"] - base) / inherited if inherited > 0 else float("nan")
    return out
