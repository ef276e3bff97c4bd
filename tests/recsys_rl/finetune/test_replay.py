"""Replay of recent impressions stays off-policy-correct: replayed banners carry the propensity logged
when they were served, and the learner's ratio against it re-weights them to the current policy
exactly (checked by enumerating every banner of a 6-product world)."""

import torch

from recsys_rl import slate
from recsys_rl.baseline import train_baseline
from recsys_rl.config import builtin_rewards, load_reward
from recsys_rl.evaluation import Evaluator
from recsys_rl.finetune.environment import finetune
from recsys_rl.finetune.replay import ReplayBuffer, concat
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.objective import ppo_kl_loss
from recsys_rl.policy import trainable_copy
from recsys_rl.records import BANNER_SIZE, BannerBatch, ContextBatch, LoggedBatch, OutcomeBatch
from tests.recsys_rl.helpers import BASELINE, POLICY, small_logs_dir, small_sim, small_train
from tests.recsys_rl.test_slate import brute_force_banners

N = 6  # 6 products, banners of 5: 720 ordered banners, few enough to enumerate


def logged(items: torch.Tensor, logits: torch.Tensor, viewed: int = 0) -> LoggedBatch:
    """Banners items (B, K) served by PL(logits (N,)), with that policy's exact log-propensity."""
    b = len(items)
    ctx = ContextBatch(torch.full((b,), viewed), torch.full((b, 10), -1))
    zeros = torch.zeros(b, BANNER_SIZE)
    lp = slate.log_prob(logits.expand(b, -1).double(), items)
    return LoggedBatch(ctx, BannerBatch(items, lp), OutcomeBatch(zeros, zeros, zeros))


def test_replayed_rows_keep_the_logged_propensity_and_the_buffer_is_fifo():
    g = torch.Generator().manual_seed(0)
    mus = [torch.randn(N, generator=g) for _ in range(4)]  # four policy versions, one batch each
    batches = [
        logged(slate.gumbel_topk(m.expand(8, -1), BANNER_SIZE, g), m, viewed=i) for i, m in enumerate(mus)
    ]
    buf = ReplayBuffer(capacity=2)
    out = [buf.with_replay(b, None)[0] for b in batches]
    assert len(out[0]) == 8 and len(out[1]) == 16 and len(out[3]) == 24  # new + at most 2 stored
    last = out[3]
    assert torch.equal(
        last.contexts.viewed, torch.tensor([3] * 8 + [1] * 8 + [2] * 8)
    )  # new first, then FIFO
    for j, i in enumerate((3, 1, 2)):
        rows = slice(8 * j, 8 * (j + 1))
        assert torch.equal(last.banners.items[rows], batches[i].banners.items)
        assert torch.equal(
            last.banners.log_prob[rows], batches[i].banners.log_prob
        )  # as served, not recomputed
    assert len(ReplayBuffer(0).with_replay(batches[0], None)[0]) == 8


def test_ratio_to_the_logged_propensity_reweights_replayed_banners_to_the_current_policy():
    torch.manual_seed(1)
    mu = torch.randn(N, dtype=torch.float64)  # the version that served the replayed banners
    pi = (mu + 0.05 * torch.randn(N, dtype=torch.float64)).requires_grad_()  # the current policy
    probs = brute_force_banners(mu, BANNER_SIZE)
    items = torch.tensor(list(probs.keys()))
    mu_p = torch.tensor(list(probs.values()), dtype=torch.float64)  # (720,) exact P_mu(banner)
    assert abs(mu_p.sum().item() - 1) < 1e-12
    buf = ReplayBuffer(capacity=1)
    buf.with_replay(logged(items, mu), None)  # served earlier by mu, stored
    fresh = logged(items[:1], pi.detach())  # a new batch: the replayed one follows it
    replayed = buf.with_replay(fresh, None)[0][1:]
    logp, _, _ = slate.banner_terms(
        pi.unsqueeze(0), mu.unsqueeze(0), replayed.banners.items, torch.zeros(len(items), dtype=torch.long)
    )  # the learner's log-prob
    ratio = torch.exp(logp - replayed.banners.log_prob)
    reward = torch.rand(len(items), dtype=torch.float64)
    exact_value = (logp.exp() * reward).sum()  # E_pi[r] by enumeration
    assert torch.allclose((mu_p * ratio * reward).sum(), exact_value, atol=1e-10)  # E_mu[w r] = E_pi[r]
    # and the PPO surrogate's gradient on them (ratios inside the clip) is the exact policy gradient
    assert 0.5 < ratio.min() and ratio.max() < 1.5
    adv = reward - reward.mean()
    t = ppo_kl_loss(
        logp,
        replayed.banners.log_prob,
        mu_p * len(items) * adv,
        torch.zeros(len(items)),
        torch.zeros(len(items)),
        torch.zeros(len(items)),
        torch.zeros(len(items)),
        beta=0.0,
        clip_eps=0.99,
        value_coef=0.0,
        entropy_coef=0.0,
    )
    (g_loss,) = torch.autograd.grad(t.total, pi, retain_graph=True)
    (g_exact,) = torch.autograd.grad(-(logp.exp() * adv).sum(), pi)
    assert torch.allclose(g_loss, g_exact, atol=1e-10)


def test_concat_keeps_every_field():
    g = torch.Generator().manual_seed(2)
    m = torch.randn(N, generator=g)
    a = logged(slate.gumbel_topk(m.expand(3, -1), BANNER_SIZE, g), m)
    b = logged(slate.gumbel_topk(m.expand(2, -1), BANNER_SIZE, g), m, viewed=1)
    c = concat([a, b])
    assert len(c) == 5 and torch.equal(
        c.banners.log_prob, torch.cat([a.banners.log_prob, b.banners.log_prob])
    )
    assert torch.equal(c.outcomes.units, torch.cat([a.outcomes.units, b.outcomes.units]))


def test_replay_costs_no_impressions(tmp_path):
    logs = read_logs(small_logs_dir(str(tmp_path)))
    sim, scheme = small_sim(), load_reward("graded")
    ref = train_baseline(logs, sim.n_products, POLICY, BASELINE, seed=0, progress=False)
    ev = Evaluator(sim, ref, scheme, builtin_rewards(), 256, seed=5)
    cfg = small_train(total_impressions=4096, contexts_per_batch=256, replay_batches=3, eval_every=2)
    res = finetune(trainable_copy(ref), ref, sim, scheme, cfg, ev, 0, progress=False)
    assert res.impressions == 4096  # 4 updates x 256 contexts x 4 banners, replayed rows not counted
    assert all(torch.isfinite(p).all() for p in res.policy.parameters())
