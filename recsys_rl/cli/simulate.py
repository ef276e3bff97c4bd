"""`recsys-rl simulate`: write a logged-data set from the behaviour policy on a simulator preset.

The only place in ``recsys_rl`` that imports ``simulator`` (the CLI wires the two together), and it
does so inside the command so ``import recsys_rl`` never pulls the simulator in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recsys_rl.cli.common import friendly, simulator_at


@friendly
def simulate(
    out: Annotated[
        Path, typer.Option("--out", help="directory for impressions.parquet and feedback.parquet")
    ],
    config: Annotated[
        Path | None,
        typer.Option("--config", help="simulator YAML, e.g. configs/sim/small.yaml (defaults if omitted)"),
    ] = None,
    impressions: Annotated[int, typer.Option("--impressions", min=1, help="impressions to log")] = 100_000,
    seed: Annotated[
        int, typer.Option("--seed", help="seed of the logged traffic (the world's seed is in the config)")
    ] = 0,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="write Parquet shards from Ray tasks: 'local' starts Ray here, 'auto' or HOST:PORT joins a "
            "cluster (needs the [ray] extra)",
        ),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="with --ray: shards written at once")] = 2,
    shard_size: Annotated[
        int, typer.Option("--shard-size", min=1, help="with --ray: impressions per shard (fixes the rows)")
    ] = 262_144,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
) -> None:
    """Log behaviour-policy banners served to simulated users, as impression and feedback Parquet.

    With --ray the log is a directory of shard-* logs, each seeded by (--seed, shard index), so its rows
    are the same whatever --workers; every command that reads logs takes the directory as it is.
    """
    if ray is not None:
        from recsys_rl.cli.distributed import simulate_on_ray
        from recsys_rl.config import SimConfig, load

        sim_cfg = load(SimConfig, config) if config is not None else SimConfig()
        simulate_on_ray(
            sim_cfg,
            address=ray,
            out=out,
            impressions=impressions,
            seed=seed,
            workers=workers,
            shard_size=shard_size,
            quiet=quiet,
        )
        typer.echo(f"wrote {impressions} impressions to {out} as shards of {shard_size} (shard-*/)")
        return
    from simulator.logged import generate_logs

    where = generate_logs(simulator_at(config), impressions, out, seed=seed, progress=not quiet)
    typer.echo(
        f"wrote {impressions} impressions to {where / 'impressions.parquet'} and {where / 'feedback.parquet'}"
    )
