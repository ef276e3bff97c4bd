import pytest
import torch

from recsys_rl.config import TrainConfig, load_reward
from recsys_rl.finetune.reward_model import rm_finetune
from recsys_rl.jobs.kl_sweep import policy_kl
from recsys_rl.policy import BannerPolicy
from recsys_rl.reward_model.scoring import policy_value
from tests.recsys_rl.reward_model.helpers import contexts, known_model

N = 20


def test_fine_tuning_against_a_fixed_reward_model_moves_toward_its_argmax():
    torch.manual_seed(0)
    bias = torch.randn(N, generator=torch.Generator().manual_seed(1)) * 1.5
    model = known_model(N, bias)
    argmax = set(bias.topk(5).indices.tolist())  # exam decreases, so the best banner is the top-5 by bias
    reference = BannerPolicy(N, embed_dim=8, hidden_dim=16).frozen_copy()
    ctx = contexts(2000, N)
    scheme = load_reward("ctr")
    cfg = TrainConfig(
        total_impressions=120_000,
        contexts_per_batch=256,
        banners_per_context=4,
        minibatch_size=1024,
        kl_target=1.2,  # nats per displayed product: 6 per banner
        lr=3e-3,
    )
    policy, history = rm_finetune(reference, model, ctx, scheme, cfg, seed=0, progress=False)

    def argmax_share(p) -> float:
        top = p.greedy(ctx[:500])
        return sum(len(set(row) & argmax) for row in top.tolist()) / (5 * len(top))

    g = torch.Generator().manual_seed(2)
    before, after = (
        policy_value(model, scheme, reference.logits, ctx, g),
        policy_value(model, scheme, policy.logits, ctx, g),
    )
    assert argmax_share(reference) < 0.6
    assert argmax_share(policy) > 0.9
    assert after > before + 0.1
    assert history[-1]["proxy_reward"] > history[0]["proxy_reward"]


def test_a_small_kl_budget_holds_the_policy_near_the_reference():
    bias = torch.randn(N, generator=torch.Generator().manual_seed(1)) * 1.5
    model = known_model(N, bias)
    reference = BannerPolicy(N, embed_dim=8, hidden_dim=16).frozen_copy()
    ctx = contexts(2000, N)
    cfg = TrainConfig(
        total_impressions=60_000,
        contexts_per_batch=256,
        banners_per_context=4,
        minibatch_size=1024,
        kl_target=0.06,
    )
    policy, _ = rm_finetune(reference, model, ctx, load_reward("ctr"), cfg, seed=0, progress=False)
    assert policy_kl(policy, reference, ctx[:500], torch.Generator().manual_seed(3)) < 0.5


def test_a_continued_run_keeps_its_kl_to_the_reference_and_its_beta():
    bias = torch.randn(N, generator=torch.Generator().manual_seed(1)) * 1.5
    model = known_model(N, bias)
    reference = BannerPolicy(N, embed_dim=8, hidden_dim=16).frozen_copy()
    ctx = contexts(2000, N)
    cfg = TrainConfig(
        total_impressions=30_000,
        contexts_per_batch=256,
        banners_per_context=4,
        minibatch_size=1024,
        kl_target=10.0,
        lr=3e-3,
    )
    first, h1 = rm_finetune(reference, model, ctx, load_reward("ctr"), cfg, seed=0, progress=False)
    more, h2 = rm_finetune(
        reference,
        model,
        ctx,
        load_reward("ctr"),
        cfg,
        seed=1,
        progress=False,
        start=first,
        beta=h1[-1]["beta"],
    )
    assert h2[0]["kl"] == pytest.approx(h1[-1]["kl"], rel=0.3)  # starts where the first run ended
    assert h2[0]["beta"] <= h1[-1]["beta"]  # the controller goes on from its beta, not from kl_beta
    g = torch.Generator().manual_seed(3)
    assert policy_kl(more, reference, ctx[:500], g) > policy_kl(first, reference, ctx[:500], g)
