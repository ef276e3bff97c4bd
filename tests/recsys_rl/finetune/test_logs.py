"""Fine-tuning from logs alone: better than the reference on the simulator, KL within budget."""

import torch

from recsys_rl.baseline import train_baseline
from recsys_rl.config import builtin_rewards, load_reward, per_banner
from recsys_rl.evaluation import Evaluator
from recsys_rl.finetune.logs import offline_finetune
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.objective import topk_offpolicy_loss
from recsys_rl.policy import BannerPolicy
from tests.recsys_rl.helpers import BASELINE, POLICY, SMALL, small_logs_dir, small_sim, small_train


def test_item_weights_are_clipped_and_gradient_follows_advantage():
    logp = torch.log(torch.tensor([[0.5, 0.01]])).requires_grad_()
    mu = torch.tensor([[0.01, 0.01]])
    t = topk_offpolicy_loss(
        logp, mu, torch.tensor([[1.0, 1.0]]), torch.zeros(1), k=5, beta=0.0, weight_clip=10.0
    )
    assert t.ratio_max.item() == 10.0 and t.clip_frac.item() == 0.5
    t.total.backward()
    assert (logp.grad < 0).all()  # raising either log-prob lowers the loss when the advantage is positive


def test_offline_finetune_improves_exact_reward_within_kl_budget(tmp_path):
    sim, scheme = small_sim(), load_reward("graded")
    logs = read_logs(small_logs_dir(str(tmp_path)))
    ref = train_baseline(logs, SMALL.n_products, POLICY, BASELINE, 0, progress=False)
    cfg = small_train(total_impressions=60_000, minibatch_size=512)
    policy, _ = offline_finetune(ref, logs, scheme, cfg, seed=0, progress=False)
    ev = Evaluator(sim, ref, scheme, builtin_rewards(), 1024, seed=5)
    m = ev(policy.eval())
    assert m["reward_graded"] > ev.reference_metrics["reward_graded"]
    assert m["kl_to_reference"] <= per_banner(cfg.kl_target, ref.banner_size)


def test_the_importance_weight_clip_is_the_train_weight_clip_setting(tmp_path):
    logs = read_logs(small_logs_dir(str(tmp_path)))
    torch.manual_seed(0)
    ref = BannerPolicy(SMALL.n_products, 8, 16).frozen_copy()
    clip_frac = {}
    for clip in (1e-3, 1e6):
        cfg = small_train(total_impressions=2048, minibatch_size=512, weight_clip=clip)
        _, history = offline_finetune(ref, logs, load_reward("graded"), cfg, seed=0, progress=False)
        clip_frac[clip] = [h["clip_frac"] for h in history]
        assert all(h["kl_per_slot"] == h["kl"] / 5 for h in history)
    assert clip_frac[1e-3] == [1.0] * 4 and clip_frac[1e6] == [0.0] * 4


def test_a_step_past_the_kl_budget_only_pulls_back_toward_the_reference(tmp_path):
    logs = read_logs(small_logs_dir(str(tmp_path)))
    ref = train_baseline(logs, SMALL.n_products, POLICY, BASELINE, 0, progress=False)
    # no penalty at all: only the pull-back holds the policy near its budget of 0.25 nats per banner
    cfg = small_train(
        total_impressions=30_000, minibatch_size=512, kl_target=0.05, kl_beta=0.0, kl_adaptive=False
    )
    _, history = offline_finetune(ref, logs, load_reward("graded"), cfg, seed=0, progress=False)
    kls = [h["kl"] for h in history]
    budget = per_banner(cfg.kl_target, ref.banner_size)
    assert max(kls) > budget  # the policy gradient does push past it
    assert max(kls[len(kls) // 2 :]) < 2 * budget
