"""The ``--ray`` branches of `sweep` and `simulate`: the CLI wires the simulator into the Ray layer.

``recsys_rl.distributed`` knows no simulator: it gets an environment factory (``functools.partial`` of
``Simulator`` on the run's preset) or a shard-writing function, both pickled to the workers. Ray itself
is imported only here and below, on these paths: the default commands never load it.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from recsys_rl.cli.common import console, print_table, run_simulator, simulated_logs
from recsys_rl.config import RunConfig, SearchConfig, load, load_reward


def _floats(text: str | None, option: str) -> list[float | None]:
    if not text:
        return [None]
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{option}: expected comma-separated numbers, got {text!r}") from None


def _ints(text: str | None, option: str) -> list[int | None]:
    if not text:
        return [None]
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{option}: expected comma-separated integers, got {text!r}") from None


def sweep_on_ray(
    cfg: RunConfig,
    *,
    address: str,
    rewards: list[str],
    betas: str | None,
    kl_targets: str | None,
    seeds: str | None,
    search: Path | None,
    name: str | None,
    resume: bool,
    experiment: str,
    workdir: Path,
    show: list[str],
    quiet: bool,
) -> None:
    """`sweep --ray ADDRESS`: the reference trained here once, each grid x search point a Tune trial."""
    from recsys_rl.baseline import train_baseline
    from recsys_rl.distributed.sweep import check_search, grid_points, ray_sweep, refuse_unsupported
    from simulator import Simulator

    if resume and not name:
        raise ValueError("--resume: give the --name of the sweep to resume")
    refuse_unsupported(cfg)
    schemes = [load_reward(r) for r in rewards]
    grid = grid_points(
        schemes,
        _floats(betas, "--betas"),
        _floats(kl_targets, "--kl-targets"),
        _ints(seeds, "--seeds"),
    )
    space = load(SearchConfig, search) if search is not None else None
    if space is not None:
        check_search(space, cfg)
    sim = run_simulator(cfg)
    batch = simulated_logs(cfg, sim, workdir, not quiet)
    ref = train_baseline(batch, sim.n_products, cfg.policy, cfg.baseline, cfg.seed, not quiet)
    name = name or f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    res = ray_sweep(
        cfg,
        ref,
        functools.partial(Simulator, cfg.sim),
        grid,
        address=address,
        experiment=experiment,
        name=name,
        search=space,
        resume=resume,
        progress=not quiet,
    )
    cols = [c for c in show if c in res.table.columns]
    if cols:
        print_table(res.table[cols], f"sweep {name} on Ray ({experiment}): last evaluation of each trial")
        workdir.mkdir(parents=True, exist_ok=True)
        res.table.to_csv(workdir / f"{name}.csv")
    console.print(
        f"{res.trials} trials ({res.errors} failed), parent run {res.parent_run_id}; "
        f"resume with --ray {address} --name {name} --resume; compare runs: recsys-rl ui"
    )


def simulate_on_ray(
    sim_cfg,
    *,
    address: str,
    out: Path,
    impressions: int,
    seed: int,
    workers: int,
    shard_size: int,
    quiet: bool,
) -> Path:
    """`simulate --ray ADDRESS`: one Ray task per shard of ``shard_size`` impressions, seeded per shard."""
    from recsys_rl.config import RayConfig
    from recsys_rl.distributed.cluster import connect
    from recsys_rl.distributed.tasks import run_tasks
    from simulator.logged import generate_shard, shard_plan

    if any(out.glob("shard-*")) or (out / "impressions.parquet").exists():
        raise ValueError(f"--out: {out} already holds a log; give an empty or new directory")
    plan = shard_plan(impressions, shard_size)
    ray_cfg = RayConfig()
    connect(address, ray_cfg)
    cfg_json = sim_cfg.model_dump_json()
    run_tasks(
        generate_shard,
        [(cfg_json, str(out.resolve()), seed, i, n) for i, n in plan],
        workers=workers,
        cpus_per_task=ray_cfg.cpus_per_trial,
        description="simulating shards",
        progress=not quiet,
    )
    return out
