import pytest
import torch

from recsys_rl.config import load_reward
from recsys_rl.guard_rails import GuardRails
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import BannerBatch, LoggedBatch, OutcomeBatch
from recsys_rl.reward_model.guard import reward_model_guard
from tests.recsys_rl.reward_model.helpers import contexts, known_model

N = 20


def _policy_preferring(scores: torch.Tensor) -> BannerPolicy:
    p = BannerPolicy(N, embed_dim=4, hidden_dim=8)
    with torch.no_grad():
        p.item_out.zero_()
        p.item_bias.copy_(scores)
    return p.frozen_copy()


def _logged(n: int = 512) -> LoggedBatch:
    ctx = contexts(n, N)
    items = torch.arange(5).expand(n, 5)
    zeros = torch.zeros(n, 5)
    return LoggedBatch(ctx, BannerBatch(items, torch.zeros(n)), OutcomeBatch(zeros, zeros, zeros))


def test_reward_model_guard_refuses_a_version_it_values_lower():
    bias = torch.linspace(-2.0, 2.0, N)
    model = known_model(N, bias)
    reference = _policy_preferring(torch.zeros(N))
    guard = GuardRails(
        kl_hard_limit=100.0,
        tolerance=1.0,
        reward_model_value=reward_model_guard(model, load_reward("ctr"), reference),
    )
    logged, flat = _logged(), lambda policy: 1.0  # the ordinary value check passes both
    worse = guard.check(_policy_preferring(-3 * bias), reference, reference, logged, flat)
    assert not worse.passed and "reward-model value" in worse.reasons[0]
    better = guard.check(_policy_preferring(3 * bias), reference, reference, logged, flat)
    assert better.passed and better.reward_model_value > worse.reward_model_value


def test_reward_model_guard_refuses_a_model_of_another_catalogue():
    with pytest.raises(ValueError, match="online.reward_model: the reward model scores 30 products"):
        reward_model_guard(
            known_model(30, torch.zeros(30)), load_reward("ctr"), _policy_preferring(torch.zeros(N))
        )


def test_off_by_default():
    assert GuardRails(kl_hard_limit=1.0).reward_model_value is None
