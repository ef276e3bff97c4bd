"""Every evaluation reports the served (sampled) policy's value beside the greedy one."""

import torch

from recsys_rl.config import RewardScheme
from recsys_rl.evaluation import Evaluator
from recsys_rl.policy import BannerPolicy
from simulator import Simulator
from tests.simulator.worlds import small_config

SCHEME = RewardScheme(name="graded", click=1, purchase=5, multi_purchase=3)


class Scaled:
    """Logits = scale * each eval user's true expected gain per product (one block of 256 contexts):
    the greedy banner is the oracle whatever the scale."""

    banner_size = 5

    def __init__(self, gains: torch.Tensor):
        self.gains, self.scale = gains, 1.0

    def logits(self, ctx):
        assert len(ctx) == len(self.gains)
        return self.gains * self.scale


def test_flattening_the_logits_keeps_the_greedy_value_and_lowers_the_sampled_one():
    from simulator.response import reward_given_examination

    sim = Simulator(small_config())
    torch.manual_seed(0)
    ref = BannerPolicy(sim.n_products, 8, 16)
    ev = Evaluator(sim, ref, SCHEME, {}, 256, seed=3)
    policy = Scaled(reward_given_examination(sim.catalogue_rates(ev.eval_set.users), SCHEME))
    policy.scale = 1e4  # near-deterministic: every draw is the greedy banner
    sharp = ev(policy)
    assert abs(sharp["oracle_gap_closed"] - 1.0) < 1e-4
    assert abs(sharp["sampled_gap_closed"] - sharp["oracle_gap_closed"]) < 1e-3
    assert ev(policy) == sharp  # seeded: the same figures twice
    policy.scale = 1e-4  # nearly uniform: the same greedy banners, a random served one
    flat = ev(policy)
    assert flat["oracle_gap_closed"] == sharp["oracle_gap_closed"]
    assert flat["sampled_gap_closed"] < 0.5
    assert flat["kl_to_reference"] < sharp["kl_to_reference"]
