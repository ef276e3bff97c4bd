"""Off-policy evaluation of Plackett–Luce banner policies from logged impressions (arrays in, Estimate out).

Workflow: PL probabilities of the logged banners under behaviour and target (``marginals``) → per-position
reward model when a model-based estimator is wanted (``reward_model``) → estimators (``estimators``),
each returning an ``Estimate`` (value, CI, standard error, effective sample size, largest weight).
"""

from recsys_rl.ope.estimate import Estimate, bootstrap_ci, effective_sample_size, normal_ci
from recsys_rl.ope.estimators import direct_method, doubly_robust, iips, ips, rips, snips
from recsys_rl.ope.marginals import (
    banner_log_prob,
    exact_marginals,
    marginals_of,
    mc_marginals,
    position_log_probs,
    prefix_probs,
    sample_banners,
)
from recsys_rl.ope.outcome_regression import (
    RewardPredictions,
    cross_fit_rewards,
    default_reward_model,
    position_features,
)

__all__ = [
    "Estimate",
    "RewardPredictions",
    "banner_log_prob",
    "bootstrap_ci",
    "cross_fit_rewards",
    "default_reward_model",
    "direct_method",
    "doubly_robust",
    "effective_sample_size",
    "exact_marginals",
    "iips",
    "ips",
    "marginals_of",
    "mc_marginals",
    "normal_ci",
    "position_features",
    "position_log_probs",
    "prefix_probs",
    "rips",
    "sample_banners",
    "snips",
]
