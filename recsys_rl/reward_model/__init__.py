"""The learned reward model (RLHF step 2): graded outcomes per (context, product, position) from logs.

Modules, each with one job: ``model`` (the torch model, position bias explicit), ``fit`` (likelihood
fitting with a held-out split), ``metrics`` (log-loss, AUC, calibration), ``packaging`` (MLflow pyfunc,
registry name ``banner-reward-model``), ``job`` (the tracked train-reward-model run), ``scoring`` (a
model's value of banners and policies), ``finetune`` (KL-constrained RL against it), ``best_of_n``,
``sweep`` (proxy vs gold value against sqrt(KL)).
"""

from recsys_rl.reward_model.config import RewardModelConfig
from recsys_rl.reward_model.fit import RewardModelDataError, fit_reward_model
from recsys_rl.reward_model.model import BannerRewardModel
from recsys_rl.reward_model.packaging import REGISTERED_NAME, check_catalogue, load_reward_model

__all__ = [
    "REGISTERED_NAME",
    "BannerRewardModel",
    "RewardModelConfig",
    "RewardModelDataError",
    "check_catalogue",
    "fit_reward_model",
    "load_reward_model",
]
