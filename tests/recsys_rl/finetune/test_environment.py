import pytest
import torch

from recsys_rl.baseline import train_baseline
from recsys_rl.config import builtin_rewards, load_reward, per_banner
from recsys_rl.evaluation import Evaluator
from recsys_rl.finetune.environment import collect, finetune
from recsys_rl.learner import Learner
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.policy import BannerPolicy, trainable_copy
from tests.recsys_rl.helpers import BASELINE, POLICY, small_logs_dir, small_sim, small_train


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    logs = read_logs(small_logs_dir(str(tmp_path_factory.mktemp("logs"))))
    return train_baseline(logs, small_sim().n_products, POLICY, BASELINE, seed=0, progress=False)


def run(reference, **kw):
    sim, scheme = small_sim(), load_reward("graded")
    ev = Evaluator(sim, reference, scheme, builtin_rewards(), 1024, seed=5)
    return finetune(
        trainable_copy(reference), reference, sim, scheme, small_train(**kw), ev, seed=0, progress=False
    ), ev


def test_baseline_learns_from_logs_better_than_an_untrained_network(reference):
    sim, scheme = small_sim(), load_reward("graded")
    ev = Evaluator(sim, reference, scheme, builtin_rewards(), 1024, seed=5)
    torch.manual_seed(0)
    untrained = ev.score_banners(BannerPolicy(sim.n_products, 16, 64).greedy(ev.eval_set.contexts))
    assert ev.reference_metrics["reward_graded"] > 1.3 * untrained["reward_graded"]


def test_short_ppo_run_improves_expected_reward_and_keeps_kl_bounded(reference):
    res, ev = run(reference)
    assert res.final["reward_graded"] > ev.reference_metrics["reward_graded"] * 1.05
    assert 0 < res.final["oracle_gap_closed"] <= 1
    assert 0 < res.final["kl_to_reference"] < 3 * per_banner(small_train().kl_target, 5)
    assert res.impressions == (60_000 // 1024) * 1024  # whole updates of 256 contexts x 4 banners


def test_reinforce_variant_also_improves(reference):
    res, ev = run(reference, algorithm="reinforce", lr=3e-4)
    assert res.final["reward_graded"] > ev.reference_metrics["reward_graded"]


def test_same_seed_same_numbers(reference):
    a, _ = run(reference, total_impressions=10_240)
    b, _ = run(reference, total_impressions=10_240)
    assert a.final == b.final


def test_higher_beta_keeps_the_policy_closer_to_the_reference(reference):
    loose, _ = run(reference, kl_beta=0.01, kl_adaptive=False, total_impressions=30_720)
    tight, _ = run(reference, kl_beta=1.0, kl_adaptive=False, total_impressions=30_720)
    assert tight.final["kl_to_reference"] < loose.final["kl_to_reference"]


def test_learner_with_one_banner_per_context_uses_the_critic(reference):
    """The live-stream path: group_size 1, advantages from the value head, which learns."""
    sim, scheme = small_sim(), load_reward("graded")
    policy = trainable_copy(reference)
    learner = Learner(policy, reference, scheme, small_train(epochs=1), seed=0)
    g = torch.Generator().manual_seed(0)
    losses = [learner.update(collect(policy, sim, 512, 1, g), group_size=1)["loss/value"] for _ in range(15)]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("k", [3, 8])
def test_a_world_with_k_slot_banners_trains_end_to_end(tmp_path, k):
    """Logs of K-product banners -> a K-banner baseline -> PPO fine-tuning, evaluated on K-banners."""
    from recsys_rl.config import BaselineConfig
    from simulator import Simulator
    from simulator.logged import generate_logs
    from tests.recsys_rl.helpers import SMALL

    sim = Simulator(type(SMALL)(**{**SMALL.model_dump(), "banner_size": k}))
    assert sim.banner_size == k and len(sim.position_bias) == k
    logs = read_logs(generate_logs(sim, 8000, tmp_path, seed=0, progress=False))
    ref = train_baseline(
        logs, sim.n_products, POLICY, BaselineConfig(logged_impressions=8000, epochs=2), 0, progress=False
    )
    assert ref.banner_size == k
    scheme = load_reward("graded")
    ev = Evaluator(sim, ref, scheme, builtin_rewards(), 512, seed=5)
    assert ev.eval_set.contexts.viewed.shape == (512,)
    batch = collect(ref, sim, 8, 2, torch.Generator().manual_seed(0))
    assert batch.banners.items.shape == (16, k) and batch.outcomes.clicks.shape == (16, k)
    res = finetune(
        trainable_copy(ref),
        ref,
        sim,
        scheme,
        small_train(total_impressions=30_720),
        ev,
        seed=0,
        progress=False,
    )
    assert res.final["reward_graded"] > ev.reference_metrics["reward_graded"]
    assert 0 < res.final["oracle_gap_closed"] <= 1 and res.final["kl_to_reference"] > 0
