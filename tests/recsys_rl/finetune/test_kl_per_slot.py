"""KL budgets are per displayed product: a banner of 1 and a banner of 5 are held alike."""

import pytest
import torch

from recsys_rl.config import SimConfig, TrainConfig, builtin_rewards, load_reward, per_banner
from recsys_rl.evaluation import Evaluator
from recsys_rl.finetune.environment import finetune
from recsys_rl.learner import Learner
from recsys_rl.policy import BannerPolicy, trainable_copy
from simulator import Simulator
from tests.recsys_rl.helpers import SMALL, small_train


def test_a_per_slot_budget_gives_the_old_banner_budgets_exactly_at_k5():
    assert per_banner(TrainConfig().kl_target, 5) == 3.0  # 0.6 * 5 is 3.0000000000000004 in floats
    assert per_banner(TrainConfig().kl_hard_limit, 5) == 5.0
    assert per_banner(0.4, 5) == 2.0  # warm_start.kl_target
    ref = BannerPolicy(20, 8, 16).frozen_copy()
    learner = Learner(trainable_copy(ref), ref, load_reward("graded"), TrainConfig(), seed=0)
    assert learner.kl_ctl.target == 3.0 * (1 - 0.1)  # what the controller aimed at before, bit for bit


BUDGET = 0.05  # nats per displayed product


def run(k: int) -> dict[str, float]:
    sim = Simulator(SimConfig(**{**SMALL.model_dump(), "banner_size": k}))
    torch.manual_seed(0)
    reference = BannerPolicy(sim.n_products, 16, 64, banner_size=k).frozen_copy()  # far from good
    scheme = load_reward("graded")
    ev = Evaluator(sim, reference, scheme, builtin_rewards(), 1024, seed=5)
    cfg = small_train(total_impressions=81_920, kl_target=BUDGET, kl_beta=0.3, lr=3e-3)
    res = finetune(trainable_copy(reference), reference, sim, scheme, cfg, ev, seed=0, progress=False)
    return {**res.final, "beta": res.history[-1]["beta"]}


def test_k1_and_k5_runs_spend_a_like_kl_per_slot_under_one_budget():
    one, five = run(1), run(5)
    for m in (one, five):
        assert 0.5 * BUDGET < m["kl_per_slot"] <= 1.5 * BUDGET  # spent and held at both sizes
    assert 0.5 < one["kl_per_slot"] / five["kl_per_slot"] < 2  # per banner it would be 5x apart
    assert five["kl_to_reference"] == pytest.approx(5 * five["kl_per_slot"])
    assert one["beta"] > 0.01  # at K=1 the controller still holds the policy: beta does not collapse
