"""`loop`: the closed feedback loop in the simulator, the configured loop beside the plain one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recsys_rl.cli.common import (
    audit_world,
    console,
    friendly,
    parse_overrides,
    print_table,
    run_simulator,
    simulated_logs,
)
from recsys_rl.config import load_run

SHOW = ["oracle_gap_closed", "exposure_gini", "tail_share", "popularity_lift", "jaccard", "calibration_kl"]


@friendly
def loop_cmd(
    rounds: Annotated[int | None, typer.Option("--rounds", min=1, help="rounds after round 0")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="run config YAML; embedded defaults if omitted")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override, e.g. --set loop.debias=true")
    ] = None,
    compare: Annotated[
        bool, typer.Option("--compare", help="also run the plain loop (every mitigation off) beside it")
    ] = False,
    workdir: Annotated[Path, typer.Option("--workdir", help="where round 0's logs go")] = Path(
        "recsys-rl-runs"
    ),
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
) -> None:
    """Serve -> log -> retrain the reference -> fine-tune, round after round, with the bias audit each round."""
    import pandas as pd

    from recsys_rl import tracking
    from recsys_rl.baseline import train_baseline
    from recsys_rl.jobs.feedback_loop import PLAIN, loop_job

    ov = parse_overrides(set_)
    if rounds is not None:
        ov["loop.rounds"] = rounds
    cfg = load_run(config, ov)
    sim = run_simulator(cfg)
    logs = simulated_logs(cfg, sim, workdir, not quiet)
    ref = train_baseline(logs, sim.n_products, cfg.policy, cfg.baseline, cfg.seed, not quiet)
    variants = {"loop": cfg.loop}
    if compare:
        variants = {"plain": cfg.loop.model_copy(update=PLAIN), "configured": cfg.loop}
    res = loop_job(cfg, sim, audit_world(sim), logs, ref, variants, progress=not quiet)
    table = res.history.set_index(["variant", "round"])[[c for c in SHOW if c in res.history]]
    last = table.groupby(level="variant", sort=False).tail(1).droplevel("round")
    first = table.xs(0, level="round")
    rows = pd.concat(
        [
            first.rename(index=lambda v: f"{v} round 0"),
            last.rename(index=lambda v: f"{v} round {cfg.loop.rounds}"),
        ]
    )
    print_table(rows, "the closed loop: round 0 and the last round (gap against round 0's reference)")
    console.print(
        f"oracle: exposure Gini {res.oracle['exposure_gini']:.3f}, tail share {res.oracle['tail_share']:.3f}, "
        f"Jaccard {res.oracle['jaccard']:.3f}"
    )
    console.print(
        f"MLflow parent run id: [bold]{res.run_id}[/bold]  (tracking URI: {tracking.tracking_uri(cfg.tracking)})"
    )
