"""The warm start from logs: it moves the policy towards what the logged feedback rewards, and it can
never hand over a policy past the KL hard limit (it rolls back to the last state within it)."""

import pytest
import torch

from recsys_rl.baseline import train_baseline
from recsys_rl.config import WarmStartConfig, load_reward, per_banner
from recsys_rl.evaluation import divergence
from recsys_rl.finetune.warm_start import PROBE_CONTEXTS, warm_start_from_model
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.reward_model import RewardModelConfig, fit_reward_model
from tests.recsys_rl.helpers import BASELINE, POLICY, small_logs_dir, small_sim, small_train

PUSH = WarmStartConfig(enabled=True, virtual_impressions=40_960, lr=0.03, kl_beta=0.0, check_every=1)
"""A warm start that optimises the learned reward hard: KL far past any small limit if let run."""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    logs = read_logs(small_logs_dir(str(tmp_path_factory.mktemp("logs"))))
    ref = train_baseline(logs, small_sim().n_products, POLICY, BASELINE, seed=0, progress=False)
    rm = fit_reward_model(logs, small_sim().n_products, RewardModelConfig(epochs=3), progress=False).model
    return logs, ref, rm


def probe_kl(policy, ref, logs, seed=0) -> float:
    """The KL the warm start checks: exact per position, on the same logged probe contexts."""
    probe = logs.contexts[
        torch.randperm(len(logs), generator=torch.Generator().manual_seed(seed + 13))[:PROBE_CONTEXTS]
    ]
    return divergence(policy.eval().logits, ref, probe, torch.Generator().manual_seed(seed + 17))[0]


def test_a_hard_push_is_rolled_back_to_within_the_kl_hard_limit(world):
    logs, ref, rm = world
    scheme = load_reward("graded")
    free = warm_start_from_model(
        ref, rm, logs, scheme, small_train(kl_hard_limit=1e6, kl_adaptive=False), PUSH, seed=0
    )
    assert free.kl > 1.0 and not free.rolled_back  # unbounded, this push goes far from the reference
    limit = 0.5  # nats per banner: the setting is per displayed product
    res = warm_start_from_model(
        ref, rm, logs, scheme, small_train(kl_hard_limit=limit / 5, kl_adaptive=False), PUSH, seed=0
    )
    assert res.rolled_back
    assert res.kl <= limit
    assert probe_kl(res.policy, ref, logs) <= limit  # the policy handed over is the one measured
    assert res.updates < free.updates


def test_no_state_within_the_limit_gives_back_the_reference(world):
    logs, ref, rm = world
    res = warm_start_from_model(
        ref, rm, logs, load_reward("graded"), small_train(kl_hard_limit=1e-9, kl_adaptive=False), PUSH, seed=0
    )
    assert res.rolled_back and res.updates == 0
    for a, b in zip(res.policy.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_default_warm_start_raises_the_learned_value_within_its_budget(world):
    logs, ref, rm = world
    from recsys_rl.reward_model.scoring import policy_value

    scheme = load_reward("graded")
    ws = WarmStartConfig(enabled=True, virtual_impressions=20_480)
    res = warm_start_from_model(ref, rm, logs, scheme, small_train(), ws, seed=0)
    ctx = logs.contexts[:2048]
    before = policy_value(rm, scheme, ref.logits, ctx, torch.Generator().manual_seed(0))
    after = policy_value(rm, scheme, res.policy.eval().logits, ctx, torch.Generator().manual_seed(0))
    assert after > before
    assert res.kl <= per_banner(small_train().kl_hard_limit, 5) and not res.rolled_back
