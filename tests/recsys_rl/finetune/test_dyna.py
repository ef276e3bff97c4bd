"""Dyna-style virtual updates: virtual banners carry their exact sampling propensity (checked by
enumerating every banner of a 6-product world), the refit makes the reward model better where the
live policy goes, the virtual steps can never leave the policy past the KL hard limit, and they cost
no impression."""

import pytest
import torch

from recsys_rl import slate
from recsys_rl.baseline import train_baseline
from recsys_rl.config import ConfigError, DynaConfig, builtin_rewards, load_reward, load_run
from recsys_rl.evaluation import Evaluator
from recsys_rl.finetune.dyna import Dyna
from recsys_rl.finetune.environment import collect, finetune
from recsys_rl.finetune.reward_model import scored_batch
from recsys_rl.learner import Learner
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.policy import BannerPolicy, trainable_copy
from recsys_rl.records import BANNER_SIZE, ContextBatch
from recsys_rl.reward_model import RewardModelConfig, fit_reward_model
from recsys_rl.reward_model.fit import validation_nll
from recsys_rl.reward_model.model import BannerRewardModel
from recsys_rl.reward_model.scoring import banner_rewards
from tests.recsys_rl.helpers import BASELINE, POLICY, small_logs_dir, small_sim, small_train
from tests.recsys_rl.test_slate import brute_force_banners

N = 6  # 6 products, banners of 5: 720 ordered banners, few enough to enumerate


def test_virtual_banners_carry_the_exact_propensity_of_the_policy_that_drew_them():
    torch.manual_seed(0)
    policy, model = BannerPolicy(N, embed_dim=4, hidden_dim=8), BannerRewardModel(N, 4, 8)
    with torch.no_grad():  # a policy far from uniform, so a wrong propensity would show
        policy.item_bias.copy_(torch.randn(N) * 2)
    scheme, n = load_reward("graded"), 20_000
    ctx = ContextBatch(torch.zeros(1, dtype=torch.long), torch.full((1, 10), -1))
    batch, rewards = scored_batch(
        policy, model, scheme, ctx.repeat_interleave(n), 1, torch.Generator().manual_seed(1)
    )
    logits = policy.logits(ctx)[0].detach()
    probs = brute_force_banners(logits, BANNER_SIZE)  # {banner: exact P_pi(banner)}
    assert abs(sum(probs.values()) - 1) < 1e-9
    exact = torch.tensor([probs[tuple(b)] for b in batch.banners.items.tolist()], dtype=torch.float64)
    assert torch.allclose(batch.banners.log_prob.double(), exact.log(), atol=1e-4)  # the logged propensity
    # the learner's ratio exp(log pi - log mu) on them is 1: the virtual batch is on-policy as logged
    logp, _, _ = slate.banner_terms(
        logits.unsqueeze(0), logits.unsqueeze(0), batch.banners.items, torch.zeros(n, dtype=torch.long)
    )
    assert torch.allclose(logp, batch.banners.log_prob, atol=1e-5)
    # the scores are the model's expected reward, and their sample mean is the policy's model value
    assert torch.allclose(rewards, banner_rewards(model, scheme, batch.contexts, batch.banners.items))
    every = torch.tensor(list(probs.keys()))
    r_all = banner_rewards(model, scheme, ctx.repeat_interleave(len(every)), every).double()
    value = (torch.tensor(list(probs.values()), dtype=torch.float64) * r_all).sum()
    assert abs(rewards.double().mean() - value) < 4 * r_all.std() / n**0.5


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    logs = read_logs(small_logs_dir(str(tmp_path_factory.mktemp("logs"))))
    sim = small_sim()
    ref = train_baseline(logs, sim.n_products, POLICY, BASELINE, seed=0, progress=False)
    rm = fit_reward_model(logs, sim.n_products, RewardModelConfig(epochs=3), progress=False).model
    return logs, ref, rm, sim


def moved_policy(ref: BannerPolicy, scale: float = 3.0) -> BannerPolicy:
    """A policy far from the logging one: the reference with its item biases stretched."""
    p = trainable_copy(ref)
    with torch.no_grad():
        p.item_bias.mul_(scale).add_(
            torch.randn(p.item_bias.shape, generator=torch.Generator().manual_seed(3))
        )
    return p


def test_refit_makes_the_model_better_on_what_the_live_policy_serves(world):
    logs, ref, rm, sim = world
    policy, g = moved_policy(ref), torch.Generator().manual_seed(4)
    dyna = Dyna(rm, logs, load_reward("graded"), DynaConfig(enabled=True, refit_steps=100), seed=0)
    for _ in range(4):
        dyna.observe(collect(policy, sim, 512, 4, g))
    held = collect(policy, sim, 1024, 4, g)  # live impressions the refit never sees
    before = validation_nll(dyna.model, held)["val_nll"]
    dyna.refit()
    assert validation_nll(dyna.model, held)["val_nll"] < before
    assert validation_nll(rm, held)["val_nll"] == pytest.approx(before)  # the caller's model is untouched


def push(world, within_budget: bool, lr: float = 0.03, **train) -> tuple[list[float], Dyna]:
    """Virtual steps that optimise the learned reward hard (no KL penalty, a large learning rate): the
    KL measured after each of 4 real updates' virtual steps, and the Dyna."""
    logs, ref, rm, sim = world
    scheme = load_reward("graded")
    cfg = small_train(lr=lr, kl_beta=0.0, kl_adaptive=False, **train)
    dcfg = DynaConfig(
        enabled=True, updates_per_real=4, contexts_per_update=256, refit_every=0, within_budget=within_budget
    )
    policy = trainable_copy(ref)
    learner, dyna = Learner(policy, ref, scheme, cfg, 0), Dyna(rm, logs, scheme, dcfg, 0)
    g, kls = torch.Generator().manual_seed(5), []
    for _ in range(4):
        dyna.observe(collect(policy, sim, 256, 4, g))
        stats = dyna.after_update(learner, policy, 4)
        kls.append(dyna.measured_kl(policy, ref, dyna._latest.contexts[::4]))
        assert stats["dyna/measured_kl"] >= 0
    return kls, dyna


def test_virtual_steps_never_leave_the_policy_past_the_kl_hard_limit(world):
    free, free_dyna = push(world, False, kl_hard_limit=1e6, kl_target=1e5)
    assert max(free) > 1.0 and free_dyna.rollbacks == 0  # unbounded, this push goes far from the reference
    bounded, dyna = push(world, False, kl_hard_limit=0.1, kl_target=1e5)  # 0.5 per banner of 5
    assert dyna.rollbacks > 0
    assert max(bounded) <= 0.5  # every state left behind is within the hard limit


def test_within_budget_virtual_steps_stop_at_what_the_adaptive_beta_aims_at(world):
    kls, dyna = push(world, True, lr=0.003, kl_target=0.02, kl_margin=0.1)  # 0.1 per banner
    assert dyna.rollbacks > 0 and max(kls) <= 0.09
    assert max(kls) > 0.03  # steps within the budget are kept


def test_dyna_costs_no_impressions_and_needs_the_warm_start(world):
    logs, ref, rm, sim = world
    scheme = load_reward("graded")
    ev = Evaluator(sim, ref, scheme, builtin_rewards(), 256, seed=5)
    cfg = small_train(total_impressions=4096, contexts_per_batch=256, eval_every=2)
    dyna = Dyna(rm, logs, scheme, DynaConfig(enabled=True, refit_steps=5, contexts_per_update=64), 0)
    res = finetune(trainable_copy(ref), ref, sim, scheme, cfg, ev, 0, progress=False, dyna=dyna)
    assert res.impressions == 4096 and dyna.real_updates == 4 and dyna.refits == 4
    assert len(dyna.live()) == 4096  # each served banner observed once
    assert all(torch.isfinite(p).all() for p in res.policy.parameters())
    with pytest.raises(ConfigError, match="dyna.enabled: needs warm_start.enabled"):
        load_run(None, {"dyna": {"enabled": True}})
    from recsys_rl.finetune.live import OnlineTrainer

    with pytest.raises(ValueError, match="dyna.enabled: the online trainer does not run"):  # not silently off
        OnlineTrainer(load_run("configs/train/dyna.yaml"), None, ref)


def test_dyna_stops_after_its_live_impressions_and_the_real_updates_go_on(world):
    logs, ref, rm, sim = world
    scheme = load_reward("graded")
    ev = Evaluator(sim, ref, scheme, builtin_rewards(), 256, seed=5)
    cfg = small_train(total_impressions=4096, contexts_per_batch=256, eval_every=2)
    dcfg = DynaConfig(enabled=True, refit_steps=5, contexts_per_update=64, stop_after=2048)
    dyna = Dyna(rm, logs, scheme, dcfg, 0)
    stopped = trainable_copy(ref)
    res = finetune(stopped, ref, sim, scheme, cfg, ev, 0, progress=False, dyna=dyna)
    assert res.impressions == 4096 and dyna.real_updates == 4
    assert dyna.refits == 2 and len(dyna.live()) == 2048  # two real updates with Dyna, two without
    assert all(torch.isfinite(p).all() for p in res.policy.parameters())
    assert not Dyna(rm, logs, scheme, DynaConfig(enabled=True), 0).stopped()  # 0: never
