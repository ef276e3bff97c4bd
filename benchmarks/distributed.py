"""Past one machine: the same sweep serially in one process and on a local two-node Ray cluster, sharded
simulation with one and two workers, and the data-parallel exactness check, in one run.

Design, and why:
- Sweep: 8 trials (reward schemes graded, ctr, purchase, revenue x seeds 0, 1) of --impressions each on
  the default world (1,000 products), sharing one baseline trained first (outside every timing).
  Serially: the in-process sweep's job (``jobs.train.train_job``), one after another, one torch thread,
  evaluating as often as a trial does, no model logged. On Ray: ``ray.cluster_utils.Cluster`` starts a
  head and a worker node of 1 CPU each on this host; ``distributed.sweep.ray_sweep`` runs the trials
  (one MLflow child run each, checkpoints every evaluation). The Ray time includes starting the
  cluster: what a user waits for. sweep_speedup = serial seconds / Ray seconds; runs_in_mlflow counts
  the child runs under the sweep's parent. Trials of tens of seconds keep Ray's start-up (~10 s) small.
  Measured on a loaded 2-core host (other jobs holding the cores; not the target conditions), 2026-12-06,
  --impressions 100000 --sim-impressions 500000: serial 84.5 s, Ray 93.6 s (sweep_speedup 0.90),
  runs_in_mlflow 8 of 8, sim 2.7 s vs 2.8 s (0.96: 62k-impression shards are too small to gain),
  ddp_max_abs_diff 9.6e-07. The defaults (400k per trial, 8M simulated) are sized for the quiet run.
- Sharded simulation: --sim-impressions impressions in 8 shards as Ray tasks with 1 and then 2 tasks in
  flight, after a warm-up that starts both worker processes and builds the world in each;
  sim_speedup = 1-worker seconds / 2-worker seconds. The rows are the same (the tests check).
- Data-parallel check: 2 Ray Train workers (gloo) fine-tune a policy over top-64 candidates of 200
  products (sparse item gradients) for 3 updates; ddp_max_abs_diff is the largest parameter difference
  to one process making the same updates on the concatenated batches.
- The figures need a quiet machine: two 1-CPU nodes on a 2-core host cannot gain if other work holds
  the cores. --quick shrinks every size to check that the script runs (its figures mean nothing).

    python benchmarks/distributed.py [--impressions 400000] [--sim-impressions 8000000] [--quick]

Last line: distributed: sweep_speedup=<x> trials=<n> runs_in_mlflow=<n> sim_speedup=<x> ddp_max_abs_diff=<x>
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
import time
from pathlib import Path

import mlflow
import torch

from recsys_rl.baseline import train_baseline
from recsys_rl.config import (
    BaselineConfig,
    PolicyConfig,
    RayConfig,
    RunConfig,
    SimConfig,
    TrackingConfig,
    TrainConfig,
    load_reward,
    with_overrides,
)
from recsys_rl.distributed.cluster import ray_env_vars
from recsys_rl.distributed.data_parallel import (
    data_parallel_finetune,
    max_abs_diff,
    single_process_equivalent,
)
from recsys_rl.distributed.sweep import grid_points, ray_sweep
from recsys_rl.distributed.tasks import run_tasks
from recsys_rl.jobs.train import train_job
from recsys_rl.logdata.parquet import read_logs
from simulator import Simulator
from simulator.logged import generate_logs, generate_shard, shard_plan

SCHEMES = ("graded", "ctr", "purchase", "revenue")
SEEDS = (0, 1)
NODE = {"num_cpus": 1, "object_store_memory": 200 * 2**20}


def run_config(tmp: Path, impressions: int, quick: bool) -> RunConfig:
    sim = SimConfig(n_products=200, n_users=3000, consideration_size=30) if quick else SimConfig()
    train = TrainConfig(
        total_impressions=impressions,
        contexts_per_batch=256 if quick else 1024,
        eval_users=512 if quick else 4096,
    )
    evaluations = 4
    per_update = train.contexts_per_batch * train.banners_per_context
    train = train.model_copy(update={"eval_every": max(1, impressions // per_update // evaluations)})
    return RunConfig(
        sim=sim,
        baseline=BaselineConfig(logged_impressions=10_000 if quick else 100_000, epochs=1 if quick else 3),
        train=train,
        tracking=TrackingConfig(tracking_uri=f"sqlite:///{tmp}/mlflow.db", log_model=False),
        ray=RayConfig(storage_path=str(tmp / "ray"), evaluations=evaluations),
    )


def serial_sweep(cfg: RunConfig, reference, grid: list[dict]) -> float:
    """The 8 trials one after another in this process, as the in-process sweep runs them."""
    env = Simulator(cfg.sim)
    start = time.perf_counter()
    for point in grid:
        train_job(
            with_overrides(cfg, point), env, reference=reference, experiment="bench-serial", progress=False
        )
    return time.perf_counter() - start


class TwoNodes:
    """A head and a worker node of 1 CPU each on this host (``ray.cluster_utils.Cluster``)."""

    def __enter__(self):
        import ray
        from ray.cluster_utils import Cluster

        env = ray_env_vars(RayConfig())
        os.environ.update(env)
        self.cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
        self.cluster.add_node(**NODE)
        ray.init(address=self.cluster.address, runtime_env={"env_vars": env}, log_to_driver=False)
        self.cluster.wait_for_nodes()
        return self

    def __exit__(self, *exc):
        import ray

        ray.shutdown()
        self.cluster.shutdown()


def sharded_simulation(cfg: SimConfig, impressions: int, tmp: Path, workers: int) -> float:
    plan = shard_plan(impressions, -(-impressions // 8))
    out = tmp / f"shards-{workers}"
    start = time.perf_counter()
    args = [(cfg.model_dump_json(), str(out), 0, i, n) for i, n in plan]
    run_tasks(generate_shard, args, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def ddp_check(tmp: Path) -> float:
    policy_cfg = PolicyConfig(embed_dim=16, hidden_dim=64, candidates=64, full_catalogue_max=100)
    sim_cfg = SimConfig(n_products=200, n_categories=10, n_users=3000, consideration_size=30)
    cfg = RunConfig(
        sim=sim_cfg,
        policy=policy_cfg,
        train=TrainConfig(
            total_impressions=3 * 512,
            contexts_per_batch=128,
            banners_per_context=4,
            eval_users=256,
            eval_every=3,
        ),
        ray=RayConfig(),
    )
    sim = Simulator(sim_cfg)
    logs = read_logs(generate_logs(sim, 5000, tmp / "ddp-logs", seed=0, progress=False))
    ref = train_baseline(
        logs, sim.n_products, policy_cfg, BaselineConfig(epochs=1, sampled_negatives=100), 0, False
    ).frozen_copy()
    spread, _ = data_parallel_finetune(cfg, ref, functools.partial(Simulator, sim_cfg), 2, str(tmp / "train"))
    return max_abs_diff(spread, single_process_equivalent(cfg, ref, sim, 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--impressions", type=int, default=400_000, help="impressions per sweep trial")
    ap.add_argument("--sim-impressions", type=int, default=8_000_000, help="impressions of the sharded log")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    a = ap.parse_args()
    impressions = 8192 if a.quick else a.impressions
    sim_impressions = 80_000 if a.quick else a.sim_impressions
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    cfg = run_config(tmp, impressions, a.quick)
    sim = Simulator(cfg.sim)
    logs = read_logs(
        generate_logs(sim, cfg.baseline.logged_impressions, tmp / "logs", seed=0, progress=False)
    )
    reference = train_baseline(logs, sim.n_products, cfg.policy, cfg.baseline, cfg.seed, False).frozen_copy()
    grid = grid_points([load_reward(s) for s in SCHEMES], [None], [None], list(SEEDS))

    serial = serial_sweep(cfg, reference, grid)
    print(f"serial sweep: {len(grid)} trials in {serial:.1f} s")
    start = time.perf_counter()
    with TwoNodes():
        res = ray_sweep(
            cfg,
            reference,
            functools.partial(Simulator, cfg.sim),
            grid,
            address="auto",
            experiment="bench-ray",
            name="bench",
            progress=False,
        )
        on_ray = time.perf_counter() - start
        print(
            f"ray sweep: {res.trials} trials ({res.errors} failed) in {on_ray:.1f} s, cluster start included"
        )
        client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
        exp = client.get_experiment_by_name("bench-ray").experiment_id
        runs = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{res.parent_run_id}'")
        sharded_simulation(cfg.sim, 2 * 1024, tmp / "warm-up", 2)  # both workers up, the world built
        sim1 = sharded_simulation(cfg.sim, sim_impressions, tmp, 1)
        sim2 = sharded_simulation(cfg.sim, sim_impressions, tmp, 2)
        print(
            f"sharded simulation of {sim_impressions:,} impressions: 1 worker {sim1:.1f} s, 2 workers {sim2:.1f} s"
        )
        diff = ddp_check(tmp)
    print(
        f"distributed: sweep_speedup={serial / on_ray:.2f} trials={res.trials} runs_in_mlflow={len(runs)} "
        f"sim_speedup={sim1 / sim2:.2f} ddp_max_abs_diff={diff:.2e}"
    )


if __name__ == "__main__":
    main()
