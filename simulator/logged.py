"""Logged data: the behaviour policy serving simulated users, written as impression/feedback Parquet.

This is what a baseline recommender is trained on and what off-policy estimators re-weight, so every
impression carries the exact propensity of its ordered banner.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress

from recsys_rl.logdata.parquet import LogWriter
from simulator.behaviour import Behaviour, PopularityBehaviour
from simulator.env import Simulator

LOG_START_TIME = 1_767_225_600.0
"""Synthetic clock of generated logs (2026-01-01 UTC), one impression per IMPRESSION_INTERVAL_S."""
IMPRESSION_INTERVAL_S = 0.01
DEFAULT_CHUNK = 65_536


def generate_logs(
    sim: Simulator,
    n_impressions: int,
    out_dir: str | os.PathLike,
    seed: int,
    chunk: int = DEFAULT_CHUNK,
    progress: bool = True,
    behaviour: Behaviour | None = None,
) -> Path:
    """Simulate ``n_impressions`` banners of the behaviour policy and write them to ``out_dir``.

    Users, contexts, banners and responses all come from one generator seeded with ``seed``, in chunks
    of ``chunk`` impressions; ids are '<seed>-<i>'. ``behaviour`` serves the banners (default: the
    popularity policy; e.g. ``ExploringBehaviour`` for a recommender with exploration) and the log
    records its version and exact banner propensities. Returns the log directory.
    """
    if n_impressions < 1:
        raise ValueError(f"n_impressions: must be >= 1, got {n_impressions}")
    if chunk < 1:
        raise ValueError(f"chunk: must be >= 1, got {chunk}")
    policy = behaviour if behaviour is not None else PopularityBehaviour(sim.popularity, k=sim.banner_size)
    generator = torch.Generator().manual_seed(seed)
    with (
        LogWriter(
            out_dir,
            policy_version=policy.version,
            id_prefix=str(seed),
            n_user_features=sim.cfg.user_feature_dim,
        ) as writer,
        Progress(console=Console(stderr=True), disable=not progress, transient=True) as bar,
    ):
        task = bar.add_task("simulating impressions", total=n_impressions)
        for start in range(0, n_impressions, chunk):
            n = min(chunk, n_impressions - start)
            users = sim.sample_users(n, generator)
            contexts = sim.contexts(users, generator)
            banners = policy.sample(contexts, generator)
            outcomes = sim.respond(users, banners.items, generator)
            timestamps = LOG_START_TIME + IMPRESSION_INTERVAL_S * torch.arange(
                start, start + n, dtype=torch.float64
            )
            writer.write(
                contexts=contexts,
                banners=banners,
                outcomes=outcomes,
                prices=sim.prices,
                user_ids=users,
                timestamps=timestamps,
            )
            bar.advance(task, n)
    return Path(out_dir)
