"""Logged data: the behaviour policy serving simulated users, written as impression/feedback Parquet.

This is what a baseline recommender is trained on and what off-policy estimators re-weight, so every
impression carries the exact propensity of its ordered banner.
"""

from __future__ import annotations

import functools
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
    id_prefix: str | None = None,
) -> Path:
    """Simulate ``n_impressions`` banners of the behaviour policy and write them to ``out_dir``.

    Users, contexts, banners and responses all come from one generator seeded with ``seed``, in chunks
    of ``chunk`` impressions; ids are '<seed>-<i>'. ``behaviour`` serves the banners (default: the
    popularity policy; e.g. ``ExploringBehaviour`` for a recommender with exploration) and the log
    records its version and exact banner propensities. ``id_prefix`` replaces ``seed`` in the ids.
    Returns the log directory.
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
            id_prefix=str(seed) if id_prefix is None else id_prefix,
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


DEFAULT_SHARD = 262_144
"""Impressions per shard of a sharded log: the unit one Ray task writes."""


def shard_plan(n_impressions: int, shard_size: int = DEFAULT_SHARD) -> list[tuple[int, int]]:
    """(shard index, impressions) of each shard: fixed by the totals alone, never by the worker count."""
    if n_impressions < 1:
        raise ValueError(f"n_impressions: must be >= 1, got {n_impressions}")
    if shard_size < 1:
        raise ValueError(f"shard_size: must be >= 1, got {shard_size}")
    return [
        (i, min(shard_size, n_impressions - s)) for i, s in enumerate(range(0, n_impressions, shard_size))
    ]


def shard_seed(seed: int, shard: int) -> int:
    """The traffic seed of one shard: independent streams per shard from one run seed (SeedSequence)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, shard]).generate_state(1, np.uint64)[0] >> 1)


@functools.cache
def _world(cfg_json: str) -> Simulator:
    """One simulator per worker process and preset: a shard task reuses the world its process built."""
    from recsys_rl.config import SimConfig

    return Simulator(SimConfig.model_validate_json(cfg_json))


def generate_shard(cfg_json: str, out_dir: str, seed: int, shard: int, n_impressions: int) -> str:
    """Write shard ``shard`` of a sharded log into ``out_dir/shard-<shard>``; returns that directory.

    ``cfg_json``: the simulator preset (``SimConfig.model_dump_json()``), so a task ships text, not a
    world. Ids are '<seed>.<shard>-<i>', unique across shards.
    """
    where = Path(out_dir) / f"shard-{shard:05d}"
    generate_logs(
        _world(cfg_json),
        n_impressions,
        where,
        seed=shard_seed(seed, shard),
        progress=False,
        id_prefix=f"{seed}.{shard}",
    )
    return str(where)
