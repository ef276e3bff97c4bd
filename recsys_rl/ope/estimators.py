"""Off-policy value estimators for ordered banners, over plain arrays.

Notation: n logged rows (context x_i, banner a_i = (a_i1..a_iK), rewards), behaviour policy μ that
served them, target policy π to evaluate. The value is V(π) = E_x E_{a~π(·|x)}[reward of a].

Which weight to use is a bias/variance trade-off fixed by what the reward depends on:
- IPS/SNIPS weight the whole banner, π(a|x)/μ(a|x): unbiased for any reward, but with K=5 of N
  products the ratio is a product of five per-slot ratios and its variance explodes.
- RIPS weights position k by the prefix a_1..a_k: unbiased when r_k depends only on what the user saw
  up to k (cascade), far lower variance at the top positions.
- IIPS weights position k by the per-position marginal: unbiased when r_k depends only on (x, a_k, k)
  (position-based model), the lowest variance of the three.
- DM plugs in a reward model; DR adds the IIPS-style correction to DM (see ``doubly_robust``).

Every function returns an ``Estimate`` (normal-approximation 95% CI by default, ci="bootstrap" for the
percentile bootstrap), with the effective sample size and the largest weight after clipping.
"""

from __future__ import annotations

import numpy as np

from recsys_rl.ope.estimate import Estimate, summarise
from recsys_rl.ope.outcome_regression import RewardPredictions
from recsys_rl.ope.validation import (
    check_clip,
    check_finite,
    check_ndim,
    check_probs,
    check_rows,
    check_same_shape,
    to_numpy,
)

Seed = int | np.random.Generator


def _weights(target, behaviour, clip, names: tuple[str, str], ndim: int) -> np.ndarray:
    """Validated importance weights π/μ, clipped at ``clip``; same shape as the inputs."""
    t, b = to_numpy(target, names[0]), to_numpy(behaviour, names[1])
    check_ndim(names[0], t, ndim)
    check_ndim(names[1], b, ndim)
    check_same_shape(**{names[0]: t, names[1]: b})
    check_probs(names[0], t, allow_zero=True)
    check_probs(names[1], b, allow_zero=False)
    check_clip(clip)
    w = t / b
    return w if clip is None else np.minimum(w, clip)


def _rewards(rewards, name: str, ndim: int) -> np.ndarray:
    r = to_numpy(rewards, name)
    check_ndim(name, r, ndim)
    check_finite(name, r)
    return r


def _name(base: str, clip: float | None) -> str:
    return base if clip is None else f"{base}(clip={clip:g})"


def ips(
    rewards,
    target_prob,
    behaviour_prob,
    clip: float | None = None,
    *,
    ci: str = "normal",
    n_boot: int = 500,
    seed: Seed = 0,
) -> Estimate:
    """Whole-banner inverse propensity scoring.

    V̂ = (1/n) Σ_i w_i r_i,  w_i = min(π(a_i|x_i) / μ(a_i|x_i), clip).
    rewards, target_prob, behaviour_prob: (n,); r_i is the banner's total reward. Unbiased without
    clipping; clipping trades a downward bias for bounded variance.
    """
    r = _rewards(rewards, "rewards", 1)
    w = _weights(target_prob, behaviour_prob, clip, ("target_prob", "behaviour_prob"), 1)
    check_rows(rewards=r, target_prob=w)
    return summarise(_name("IPS", clip), w * r, w, ci=ci, n_boot=n_boot, seed=seed)


def snips(
    rewards,
    target_prob,
    behaviour_prob,
    clip: float | None = None,
    *,
    ci: str = "normal",
    n_boot: int = 500,
    seed: Seed = 0,
) -> Estimate:
    """Self-normalised IPS.

    V̂ = Σ_i w_i r_i / Σ_i w_i, w_i as in ``ips``. Biased by O(1/n) but bounded by the observed rewards
    and usually far less variable than IPS. Standard error by the delta method:
    se² = Σ_i w_i²(r_i − V̂)² / (n(n−1) · w̄²).
    """
    r = _rewards(rewards, "rewards", 1)
    w = _weights(target_prob, behaviour_prob, clip, ("target_prob", "behaviour_prob"), 1)
    check_rows(rewards=r, target_prob=w)
    return summarise(_name("SNIPS", clip), w * r, w, ci=ci, n_boot=n_boot, seed=seed, denominators=w)


def iips(
    position_rewards,
    target_marginals,
    behaviour_marginals,
    clip: float | None = None,
    *,
    ci: str = "normal",
    n_boot: int = 500,
    seed: Seed = 0,
) -> Estimate:
    """Independent IPS (position-based model).

    V̂ = (1/n) Σ_i Σ_k w_ik r_ik,  w_ik = min(π_k(a_ik|x_i) / μ_k(a_ik|x_i), clip),
    where π_k(j|x) = P_π(product j at position k | x) is the per-position marginal
    (see ``marginals.exact_marginals`` / ``mc_marginals`` and ``marginals_of``).
    position_rewards, target_marginals, behaviour_marginals: (n, K).
    """
    r = _rewards(position_rewards, "position_rewards", 2)
    w = _weights(target_marginals, behaviour_marginals, clip, ("target_marginals", "behaviour_marginals"), 2)
    check_same_shape(position_rewards=r, target_marginals=w)
    check_rows(position_rewards=r)
    return summarise(_name("IIPS", clip), (w * r).sum(axis=1), w, ci=ci, n_boot=n_boot, seed=seed)


def rips(
    position_rewards,
    target_prefix_probs,
    behaviour_prefix_probs,
    clip: float | None = None,
    *,
    ci: str = "normal",
    n_boot: int = 500,
    seed: Seed = 0,
) -> Estimate:
    """Reward-interaction IPS (cascade model).

    V̂ = (1/n) Σ_i Σ_k w_ik r_ik,  w_ik = min(π(a_i1..a_ik|x_i) / μ(a_i1..a_ik|x_i), clip),
    the ratio of the probabilities of the prefix up to position k (``marginals.prefix_probs``);
    the last column is the whole-banner weight. All arrays (n, K).
    """
    r = _rewards(position_rewards, "position_rewards", 2)
    w = _weights(
        target_prefix_probs,
        behaviour_prefix_probs,
        clip,
        ("target_prefix_probs", "behaviour_prefix_probs"),
        2,
    )
    check_same_shape(position_rewards=r, target_prefix_probs=w)
    check_rows(position_rewards=r)
    return summarise(_name("RIPS", clip), (w * r).sum(axis=1), w, ci=ci, n_boot=n_boot, seed=seed)


def direct_method(
    predictions: RewardPredictions, *, ci: str = "normal", n_boot: int = 500, seed: Seed = 0
) -> Estimate:
    """Direct method: the reward model's value of the target policy.

    V̂ = (1/n) Σ_i E_{a~π(·|x_i)}[Σ_k q̂(x_i, a_k, k)] = mean(predictions.target)
    (``reward_model.cross_fit_rewards`` computes the inner expectation). No importance weights, so
    ess = n and max_weight = 1; the interval covers only context-sampling noise, not model bias.
    """
    q = to_numpy(predictions.target, "predictions.target")
    check_ndim("predictions.target", q, 1)
    check_finite("predictions.target", q)
    check_rows(**{"predictions.target": q})
    return summarise("DM", q, np.ones_like(q), ci=ci, n_boot=n_boot, seed=seed)


def doubly_robust(
    position_rewards,
    target_marginals,
    behaviour_marginals,
    predictions: RewardPredictions,
    clip: float | None = None,
    *,
    ci: str = "normal",
    n_boot: int = 500,
    seed: Seed = 0,
) -> Estimate:
    """Doubly robust: DM plus a per-position importance-weighted correction of the model's residuals.

    V̂ = (1/n) Σ_i [ E_{a~π}[Σ_k q̂(x_i, a_k, k)] + Σ_k w_ik (r_ik − q̂(x_i, a_ik, k)) ],
    w_ik the per-position marginal ratio of ``iips``. Unbiased when either q̂ is right or the
    position-based model holds (the IIPS assumption); the per-position weights are chosen over the
    whole-banner weight because the whole-banner ratio's variance swamps what the model removes.
    position_rewards, target_marginals, behaviour_marginals: (n, K); predictions from
    ``cross_fit_rewards`` (cross-fitted, so q̂ is never scored on the rows it was trained on).
    """
    r = _rewards(position_rewards, "position_rewards", 2)
    w = _weights(target_marginals, behaviour_marginals, clip, ("target_marginals", "behaviour_marginals"), 2)
    q_log = to_numpy(predictions.logged, "predictions.logged")
    q_tgt = to_numpy(predictions.target, "predictions.target")
    check_same_shape(position_rewards=r, target_marginals=w, **{"predictions.logged": q_log})
    check_ndim("predictions.target", q_tgt, 1)
    check_finite("predictions.logged", q_log)
    check_finite("predictions.target", q_tgt)
    check_rows(position_rewards=r, **{"predictions.target": q_tgt})
    terms = q_tgt + (w * (r - q_log)).sum(axis=1)
    return summarise(_name("DR", clip), terms, w, ci=ci, n_boot=n_boot, seed=seed)
