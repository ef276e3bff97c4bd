"""A policy over the union of its sources: one Plackett–Luce distribution with exact propensities."""

import torch

from recsys_rl import slate
from recsys_rl.baseline import train_baseline
from recsys_rl.candidates.sources import build_sources
from recsys_rl.config import load_run
from recsys_rl.policy import BannerPolicy, load_policy, save_policy, trainable_copy
from recsys_rl.records import ContextBatch, LoggedBatch
from tests.recsys_rl.candidates.world import CATEGORY

N = 600


def world_logs(rows: int = 800, seed: int = 0) -> LoggedBatch:
    """Logs where a viewed product j's neighbours are j + 1 and j + 2 (who views j engages with them);
    no history, so nothing else co-occurs."""
    from recsys_rl.records import BannerBatch, OutcomeBatch

    g = torch.Generator().manual_seed(seed)
    viewed = torch.randint(0, N, (rows,), generator=g)
    history = torch.full((rows, 10), -1)
    items = torch.stack([(viewed + d) % N for d in (1, 2, 50, 51, 52)], 1)
    clicks = torch.zeros(rows, 5)
    clicks[:, :2] = 1.0
    return LoggedBatch(
        ContextBatch(viewed, history),
        BannerBatch(items, torch.zeros(rows)),
        OutcomeBatch(clicks, clicks, clicks),
    )


def sourced_policy(seed: int = 0) -> BannerPolicy:
    torch.manual_seed(seed)
    category = CATEGORY.repeat(N // len(CATEGORY))
    src = build_sources(world_logs(), N, 8, 4, 6, 4, 5, category)
    p = BannerPolicy(N, 8, 16, candidates=32, full_catalogue_max=0, context_bonus=True, sources=src.spec)
    p.sources.load_state_dict(src.state_dict())
    with torch.no_grad():
        p.item_bias.normal_()
        p.item_out.normal_()
        p.source_weights.copy_(torch.tensor([0.2, -0.1, 0.05]))
        p.context_weights.fill_(0.1)
    return p


def contexts(n: int, seed: int = 1) -> ContextBatch:
    g = torch.Generator().manual_seed(seed)
    history = torch.randint(0, N, (n, 10), generator=g)
    history[:, 6:] = -1
    return ContextBatch(world_logs().contexts.viewed[:n], history)  # viewed products the logs know


def test_the_union_holds_every_source_and_the_policy_top_m_at_a_fixed_width():
    p, ctx = sourced_policy(), contexts(16)
    ids = p.candidates(ctx)
    width = 32 + 11 + p.sources.width
    assert ids.shape == (16, width)
    top = p.retriever.search(p.query(ctx), 32)
    for r in range(16):
        row = set(ids[r].tolist())
        assert len(row) == width
        assert set(top[r].tolist()) <= row
        assert (
            int(ctx.viewed[r]) in row and (int(ctx.viewed[r]) + 1) % N in row
        )  # its co-occurrence neighbour
        for lst in p.sources.lists(ctx[r : r + 1]):
            assert {x for x in lst[0].tolist() if x >= 0} <= row


def test_the_unions_propensity_is_the_learners_log_prob_of_the_same_banner():
    p, ctx = sourced_policy(), contexts(64)
    served = p.sample(ctx, generator=torch.Generator().manual_seed(0))  # what serving logs
    cand, valid = slate.with_banner(p.candidates(ctx), served.items)  # what the learner rebuilds
    logits = p.candidate_logits(ctx, cand).masked_fill(~valid, slate.PAD_LOGIT)
    logp, kl, _ = slate.restricted_terms(logits, logits, cand, served.items)
    assert torch.allclose(logp, served.log_prob, atol=1e-5)
    assert torch.allclose(p.banner_log_prob(ctx, served.items), served.log_prob, atol=1e-5)
    # the source weights are in the logits: the policy's features move the propensity
    ids, with_w = p.candidates_and_logits(ctx)
    assert not torch.allclose(with_w, p.score(p.query(ctx), ids) + p.context_offsets(ctx, ids))


def test_a_policy_keeps_its_sources_through_save_load_and_a_trainable_copy(tmp_path):
    p, ctx = sourced_policy(), contexts(8)
    save_policy(p, tmp_path / "p.pt")
    back = load_policy(tmp_path / "p.pt")
    assert torch.equal(back.candidates(ctx), p.candidates(ctx))
    assert torch.equal(trainable_copy(p).candidates(ctx), p.candidates(ctx))
    assert torch.equal(p.frozen_copy().candidates(ctx), p.candidates(ctx))


def test_the_reference_gets_the_sources_of_its_logs_with_zero_weights():
    cfg = load_run(
        None, {"baseline.epochs": 1, "baseline.sampled_negatives": 64, "policy.full_catalogue_max": 0}
    )
    policy_cfg = cfg.policy.model_copy(update={"candidates": 32, "embed_dim": 8, "hidden_dim": 16})
    ref = train_baseline(
        world_logs(), N, policy_cfg, cfg.baseline, 0, progress=False, item_category=CATEGORY.repeat(N // 12)
    )
    assert ref.sources is not None and torch.equal(ref.source_weights, torch.zeros(3))
    v = int(world_logs().contexts.viewed[0])
    assert ref.sources.neighbour_table[v, :3].tolist() == [(v + 1) % N, (v + 2) % N, -1]  # 16 kept (default)


def test_on_the_full_catalogue_path_the_sources_change_nothing():
    """At or below policy.full_catalogue_max every product is scored: no sources are built."""
    cfg = load_run(None, {"baseline.epochs": 1})
    off = cfg.policy.model_copy(
        update={
            "embed_dim": 8,
            "hidden_dim": 16,
            "sources": cfg.policy.sources.model_copy(update={"cooccurrence": 0}),
        }
    )
    on = cfg.policy.model_copy(update={"embed_dim": 8, "hidden_dim": 16})
    a = train_baseline(
        world_logs(), N, on, cfg.baseline, 0, progress=False, item_category=CATEGORY.repeat(N // 12)
    )
    b = train_baseline(world_logs(), N, off, cfg.baseline, 0, progress=False)
    assert a.sources is None and not a.uses_candidates
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
