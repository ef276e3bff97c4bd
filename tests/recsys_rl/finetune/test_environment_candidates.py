"""A small many-product world: baseline by sampled softmax, fine-tuning over candidates, evaluation."""

import functools
import tempfile

import pytest
import torch

from recsys_rl.baseline import train_baseline
from recsys_rl.config import BaselineConfig, PolicyConfig, SimConfig, builtin_rewards, load_reward, per_banner
from recsys_rl.evaluation import Evaluator
from recsys_rl.finetune.environment import finetune
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.policy import BannerPolicy, trainable_copy
from simulator import Simulator
from simulator.logged import generate_logs
from tests.recsys_rl.helpers import small_train

MANY = SimConfig(n_products=6000, n_categories=30, n_users=3000, consideration_size=30)
POLICY = PolicyConfig(embed_dim=16, hidden_dim=64, candidates=128, full_catalogue_max=1000)
BASELINE = BaselineConfig(logged_impressions=20_000, epochs=2, sampled_negatives=512)


@functools.cache
def many_sim() -> Simulator:
    return Simulator(MANY)


@pytest.fixture(scope="module")
def reference():
    with tempfile.TemporaryDirectory() as d:
        logs = read_logs(generate_logs(many_sim(), BASELINE.logged_impressions, d, seed=0, progress=False))
    return train_baseline(logs, MANY.n_products, POLICY, BASELINE, seed=0, progress=False)


def test_sampled_softmax_baseline_beats_an_untrained_network(reference):
    sim, scheme = many_sim(), load_reward("graded")
    assert reference.uses_candidates
    ev = Evaluator(sim, reference, scheme, builtin_rewards(), 1024, seed=5)
    torch.manual_seed(0)
    untrained = BannerPolicy(sim.n_products, 16, 64, candidates=128, full_catalogue_max=1000)
    assert ev.reference_metrics["reward_graded"] > 1.3 * ev(untrained)["reward_graded"]


def test_fine_tuning_over_candidates_improves_reward_with_bounded_kl(reference):
    sim, scheme = many_sim(), load_reward("graded")
    ev = Evaluator(sim, reference, scheme, builtin_rewards(), 1024, seed=5)
    cfg = small_train(total_impressions=60_000)
    res = finetune(trainable_copy(reference), reference, sim, scheme, cfg, ev, seed=0, progress=False)
    assert res.final["reward_graded"] > ev.reference_metrics["reward_graded"] * 1.05
    assert 0 < res.final["kl_to_reference"] < 3 * per_banner(cfg.kl_target, 5)
    assert res.history[0]["kl_to_reference"] == pytest.approx(0.0, abs=1e-6)


def test_epsilon_greedy_acts_without_a_contexts_by_products_matrix(monkeypatch):
    from recsys_rl.yardsticks import bandits

    monkeypatch.setattr(bandits, "LARGE_ELEMENTS", 0)  # as at 10^6 products
    sim, scheme = many_sim(), load_reward("graded")
    agent = bandits.run_bandit(bandits.EpsilonGreedy(sim.n_products), sim, scheme, 20_000, 2000, 0, False)
    g = torch.Generator().manual_seed(0)
    items = agent.act(sim.contexts(sim.sample_users(500, g), g), g)
    assert items.shape == (500, 5) and (items.sort(1).values.diff(1) != 0).all()
    assert agent.counts.sum() == 100_000  # every shown slot counted
