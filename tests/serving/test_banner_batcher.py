"""Micro-batching: concurrent requests share one forward; each row keeps its own mode and propensity."""

from __future__ import annotations

import asyncio

import pytest
import torch

from recsys_rl import slate
from recsys_rl.records import HISTORY_LEN, PAD
from serving.banner_batcher import BannerBatcher
from serving.metrics import ServingMetrics
from tests.serving.helpers import tiny_holder, tiny_policy

CONTEXTS = [(3, [1, 2]), (4, []), (5, [6, 7, 8]), (9, [10]), (11, [12, 13]), (14, [])]


async def _serve_all(store, seed: int, modes: list[bool], temperature: float = 1.0):
    holder = tiny_holder()
    metrics = ServingMetrics(holder, temperature)
    batcher = BannerBatcher(
        store, metrics, temperature=temperature, generator=torch.Generator().manual_seed(seed)
    )
    try:
        got = await asyncio.gather(
            *(
                batcher.serve(holder.current, k, v, h, None, e)
                for k, ((v, h), e) in enumerate(zip(CONTEXTS, modes, strict=True))
            )
        )
    finally:
        await batcher.drain()
    return got, metrics


def _logits() -> torch.Tensor:
    history = torch.full((len(CONTEXTS), HISTORY_LEN), PAD)
    for i, (_, h) in enumerate(CONTEXTS):
        history[i, : len(h)] = torch.tensor(h, dtype=torch.long)
    with torch.no_grad():
        return tiny_policy()(torch.tensor([v for v, _ in CONTEXTS]), history)


def test_concurrent_requests_are_scored_in_one_batch_with_per_row_modes(store):
    modes = [True, False, True, False, True, True]
    got, metrics = asyncio.run(_serve_all(store, 0, modes))
    assert metrics.batch_size._sum.get() == len(CONTEXTS)  # one observation of the whole batch
    logits = _logits()
    greedy = slate.greedy(logits, 5)
    for row, (imp, explore) in enumerate(zip(got, modes, strict=True)):
        items = torch.tensor([imp.items])
        if explore:
            expected = slate.log_prob(logits[row : row + 1].double(), items).item()
            assert imp.log_propensity == pytest.approx(expected, abs=1e-9)
        else:
            assert list(imp.items) == greedy[row].tolist() and imp.log_propensity == 0.0
    assert store.count_impressions() == len(CONTEXTS)


def test_same_seed_same_banners(tmp_path):
    from recsys_rl.events import open_store

    runs = []
    for name in ("a", "b"):
        with open_store(f"sqlite:///{tmp_path}/{name}.db") as store:
            got, _ = asyncio.run(_serve_all(store, 42, [True] * len(CONTEXTS)))
            runs.append([imp.items for imp in got])
    assert runs[0] == runs[1]


def test_a_failing_store_fails_every_request_of_the_batch(store):
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(_serve_all(store, 0, [True] * len(CONTEXTS)))
