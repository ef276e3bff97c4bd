"""Serving a large-catalogue policy: banners come from its candidates and the logged propensity is
the learner's log-prob of the same banner."""

from __future__ import annotations

import asyncio

import pytest
import torch

from recsys_rl import slate
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import HISTORY_LEN, PAD, ContextBatch
from serving.banner_batcher import BannerBatcher
from serving.metrics import ServingMetrics
from serving.model_holder import ModelHolder, from_policy

CONTEXTS = [(3, [1, 2]), (40, []), (500, [6, 700, 8]), (9, [10]), (1100, [12, 13]), (2999, [])]


def candidate_policy() -> BannerPolicy:
    torch.manual_seed(0)
    p = BannerPolicy(3000, 8, 16, candidates=48, retrieval="ivf", full_catalogue_max=0)
    with torch.no_grad():
        p.item_bias.normal_()
        p.item_out.normal_()  # a trained-looking table (large policies start at zero)
    return p


def test_served_propensity_equals_the_learners_log_prob(store):
    policy = candidate_policy()
    model = from_policy(policy, "v-big")
    assert model.candidates is not None
    holder = ModelHolder(model=model)
    modes = [True, True, False, True, True, False]

    async def serve_all():
        batcher = BannerBatcher(
            store, ServingMetrics(holder, 1.0), temperature=1.0, generator=torch.Generator().manual_seed(0)
        )
        try:
            return await asyncio.gather(
                *(
                    batcher.serve(holder.current, k, v, h, None, e)
                    for k, ((v, h), e) in enumerate(zip(CONTEXTS, modes, strict=True))
                )
            )
        finally:
            await batcher.drain()

    got = asyncio.run(serve_all())
    history = torch.full((len(CONTEXTS), HISTORY_LEN), PAD)
    for i, (_, h) in enumerate(CONTEXTS):
        history[i, : len(h)] = torch.tensor(h, dtype=torch.long)
    ctx = ContextBatch(torch.tensor([v for v, _ in CONTEXTS]), history)
    items = torch.tensor([imp.items for imp in got])
    learner_lp = policy.banner_log_prob(ctx, items)  # what the learner and OPE compute
    cand = policy.candidates(ctx)
    assert (items.unsqueeze(2) == cand.unsqueeze(1)).any(2).all()
    for row, (imp, explore) in enumerate(zip(got, modes, strict=True)):
        if explore:
            assert imp.log_propensity == pytest.approx(learner_lp[row].item(), abs=1e-5)
        else:
            assert list(imp.items) == policy.greedy(ctx[row : row + 1])[0].tolist()
            assert imp.log_propensity == 0.0
    assert torch.equal(policy.greedy(ctx), slate.greedy(policy.logits(ctx), 5))  # ivf found the top
