"""A policy over its candidates: what serving logs is what the learner computes."""

import torch
import torch.nn.functional as F

from recsys_rl import slate
from recsys_rl.baseline import sampled_softmax_loss
from recsys_rl.config import load_reward, load_run
from recsys_rl.learner import Learner
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import ContextBatch, LoggedBatch, OutcomeBatch


def restricted_policy(n=400, m=32, retrieval="exact", seed=0) -> BannerPolicy:
    torch.manual_seed(seed)
    p = BannerPolicy(n, 8, 16, candidates=m, retrieval=retrieval, full_catalogue_max=0)
    with torch.no_grad():
        p.item_bias.normal_()
        p.item_out.normal_()  # a trained-looking table (large policies start at zero)
    return p


def contexts(n_ctx, n_products, seed=1) -> ContextBatch:
    g = torch.Generator().manual_seed(seed)
    viewed = torch.randint(0, n_products, (n_ctx,), generator=g)
    history = torch.randint(0, n_products, (n_ctx, 10), generator=g)
    history[:, 6:] = -1
    return ContextBatch(viewed, history)


def test_sampled_banners_come_from_the_top_m_and_greedy_is_the_full_top_5():
    p = restricted_policy()
    ctx = contexts(64, 400)
    top = p.logits(ctx).topk(32, dim=1).indices.sort(1).values
    banners = p.sample(ctx, generator=torch.Generator().manual_seed(0))
    assert (banners.items.unsqueeze(2) == top.unsqueeze(1)).any(2).all()
    assert torch.equal(p.greedy(ctx), slate.greedy(p.logits(ctx), 5))


def test_logged_propensity_equals_the_learners_log_prob_of_the_same_banner():
    p = restricted_policy(retrieval="ivf", n=3000, m=64)
    ref = p.frozen_copy()
    ref.refresh_candidates()
    ctx = contexts(128, 3000)
    served = p.sample(ctx, generator=torch.Generator().manual_seed(0))  # what serving logs
    # the live learner: current candidates (this version), extended by the served items
    cand, valid = slate.with_banner(p.candidates(ctx), served.items)
    logits = p.candidate_logits(ctx, cand).masked_fill(~valid, slate.PAD_LOGIT)
    logp, kl, _ = slate.restricted_terms(logits, logits, cand, served.items)
    assert torch.allclose(logp, served.log_prob, atol=1e-5)
    assert torch.allclose(p.banner_log_prob(ctx, served.items), served.log_prob, atol=1e-5)
    assert kl.abs().max() < 1e-6


def test_learner_update_over_candidates_keeps_probabilities_and_starts_at_zero_kl():
    cfg = load_run(None, {"train.epochs": 1}).train
    p = restricted_policy()
    ref = p.frozen_copy()
    ctx = contexts(64, 400)
    g = torch.Generator().manual_seed(0)
    cand, logits = p.candidates_and_logits(ctx)
    items, logp = slate.restricted_sample(logits.repeat_interleave(2, 0), cand.repeat_interleave(2, 0), 5, g)
    from recsys_rl.records import BannerBatch

    clicks = torch.zeros(128, 5)
    clicks[:, 0] = (items[:, 0] % 2).float()  # odd products at the top get clicked
    batch = LoggedBatch(
        ctx.repeat_interleave(2), BannerBatch(items, logp), OutcomeBatch(clicks, clicks, clicks)
    )
    learner = Learner(p, ref, load_reward("ctr"), cfg, seed=0)
    before = p.item_out.detach().clone()
    stats = learner.update(batch, group_size=2, candidates=cand)
    assert abs(stats["loss/kl"]) < 1e-6  # same policy, same candidates
    moved = (p.item_out.detach() - before).abs().sum(1) > 0
    assert 0 < moved.sum() < 400  # sparse updates: only rows that were candidates or in contexts
    # the live path (no candidates given) runs on the same batch
    assert torch.isfinite(torch.tensor(learner.update(batch, group_size=2)["loss/total"]))


def test_sampled_softmax_with_every_product_as_negative_is_the_full_softmax():
    p = restricted_policy(n=50)
    ctx = contexts(16, 50)
    targets = torch.randint(0, 50, (16,), generator=torch.Generator().manual_seed(2))
    w = torch.rand(16, generator=torch.Generator().manual_seed(3))
    log_q = torch.full((50,), -torch.log(torch.tensor(50.0)).item())  # uniform Q: S Q_j = 1
    loss = sampled_softmax_loss(p, ctx, targets, w, log_q, torch.arange(50))
    full = (F.cross_entropy(p.logits(ctx), targets, reduction="none") * w).sum() / w.sum()
    assert torch.allclose(loss, full, atol=1e-5)


def test_ivf_nprobe_is_saved_with_the_policy_so_serving_retrieves_as_the_learner_did(tmp_path):
    from recsys_rl.policy import load_policy, save_policy

    p = restricted_policy(n=3000, m=64, retrieval="ivf")
    p.nprobe = 3
    save_policy(p, tmp_path / "p.pt")
    loaded = load_policy(tmp_path / "p.pt")
    assert loaded.nprobe == 3
    assert loaded.retriever.index.index.nprobe == 3
    ctx = contexts(16, 3000)
    assert torch.equal(loaded.candidates(ctx), p.candidates(ctx))


def test_context_bonus_candidates_hold_the_context_and_the_learner_moves_the_bonus():
    torch.manual_seed(0)
    p = BannerPolicy(400, 8, 16, candidates=32, full_catalogue_max=0, context_bonus=True)
    with torch.no_grad():
        p.item_bias.normal_()
        p.item_out.normal_()
    ref = p.frozen_copy()
    ctx = contexts(64, 400)
    ctx.history[0, 1] = ctx.history[0, 0]  # a repeated purchase appears once
    cand, logits = p.candidates_and_logits(ctx)
    own = p.context_products(ctx)
    assert cand.shape == (64, 32 + 11) and (cand.sort(1).values.diff(1) != 0).all() and cand.min() >= 0
    assert ((own.unsqueeze(2) == cand.unsqueeze(1)).any(2) | (own < 0)).all()  # every context product
    top = p.logits(ctx).topk(32, dim=1).indices
    assert (top.unsqueeze(2) == cand.unsqueeze(1)).any(2).all()  # and the whole top-M
    with torch.no_grad():
        p.context_weights.fill_(0.2)
    cand, logits = p.candidates_and_logits(ctx)
    inside = (cand.unsqueeze(2) == own.unsqueeze(1)).any(2)
    want = p.score(p.query(ctx), cand) + 2.0 * inside
    assert torch.allclose(logits, want, atol=1e-5)
    served = p.sample(ctx, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(p.banner_log_prob(ctx, served.items), served.log_prob, atol=1e-5)
    # banners whose top slot is a context product get clicked: the shared offset rises
    g = torch.Generator().manual_seed(1)
    items, logp = slate.restricted_sample(logits.repeat_interleave(2, 0), cand.repeat_interleave(2, 0), 5, g)
    from recsys_rl.records import BannerBatch

    clicks = torch.zeros(128, 5)
    clicks[:, 0] = (items[:, :1] == own.repeat_interleave(2, 0)).any(1).float()
    batch = LoggedBatch(
        ctx.repeat_interleave(2), BannerBatch(items, logp), OutcomeBatch(clicks, clicks, clicks)
    )
    learner = Learner(p, ref, load_reward("ctr"), load_run(None, {"train.epochs": 1}).train, seed=0)
    before = p.context_weights.item()
    learner.update(batch, group_size=2, candidates=cand)
    assert p.context_weights.item() > before
    assert not BannerPolicy(
        400, 8, 16, candidates=32, full_catalogue_max=10**6, context_bonus=True
    ).has_context_bonus
