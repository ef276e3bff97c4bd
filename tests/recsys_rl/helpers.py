"""Small, fast worlds for engine tests (the simulator stands in for real traffic)."""

from __future__ import annotations

import functools

from recsys_rl.config import BaselineConfig, PolicyConfig, SimConfig, TrainConfig
from simulator import Simulator
from simulator.logged import generate_logs

SMALL = SimConfig(n_products=200, n_categories=10, n_users=3000, consideration_size=30)
POLICY = PolicyConfig(embed_dim=16, hidden_dim=64)
BASELINE = BaselineConfig(logged_impressions=20_000, epochs=2)


@functools.cache
def small_sim() -> Simulator:
    return Simulator(SMALL)


def small_train(**kw) -> TrainConfig:
    base = dict(
        total_impressions=60_000,
        contexts_per_batch=256,
        banners_per_context=4,
        eval_every=1000,
        eval_users=1024,
        minibatch_size=512,
    )
    return TrainConfig(**{**base, **kw})


@functools.cache
def small_logs_dir(tmp_root: str):
    return generate_logs(small_sim(), BASELINE.logged_impressions, f"{tmp_root}/logs", seed=0, progress=False)
