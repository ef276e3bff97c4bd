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
) -> None:
    """Log behaviour-policy banners served to simulated users, as impression and feedback Parquet."""
    from simulator.logged import generate_logs

    where = generate_logs(simulator_at(config), impressions, out, seed=seed)
    typer.echo(
        f"wrote {impressions} impressions to {where / 'impressions.parquet'} and {where / 'feedback.parquet'}"
    )
