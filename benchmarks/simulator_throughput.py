"""Impressions per second of the vectorised simulator vs the per-impression Python loop.

The work per impression, for both: draw a user, draw their context (Gumbel-top-11 over 50 candidates),
draw a banner of 5 distinct random products, sample the response. Initialisation is not timed.
Each figure is the best of several timed repeats (least disturbed by other work on a shared machine);
load1 (the 1-minute load average) says how busy the machine was: on 2 cores, anything above ~1 means
other processes competed, which slows the 2-thread vectorised path far more than the 1-thread loop.

    python benchmarks/simulator_throughput.py            # 1k, 100k and 1M products (small, large, xlarge)
    python benchmarks/simulator_throughput.py --presets small,large   # skip the 1M build (~1 min)

Each preset line also gives the build time (init_s) and the process's peak RSS so far (rss_mb).
Last line: simulator: impressions_per_s=<n> loop_impressions_per_s=<n> speedup=<x>   (small catalogue)
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import torch

from recsys_rl.config import SimConfig, load
from simulator import Simulator, random_banners
from simulator.loop_reference import LoopSimulator

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "sim"


def vectorised_rate(sim: Simulator, batch: int, repeats: int, seed: int = 0) -> float:
    generator = torch.Generator().manual_seed(seed)

    def step() -> None:
        users = sim.sample_users(batch, generator)
        sim.contexts(users, generator)
        banners = random_banners(batch, sim.n_products, generator)
        sim.respond(users, banners, generator)

    step()  # warm-up: allocator and thread pool
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t)
    return batch / best


def loop_rate(sim: Simulator, impressions: int, repeats: int, seed: int = 0) -> float:
    loop = LoopSimulator(sim, seed)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(impressions):
            loop.impression()
        best = min(best, time.perf_counter() - t)
    return impressions / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=65_536, help="impressions per vectorised batch")
    ap.add_argument("--repeats", type=int, default=7, help="timed vectorised batches (best is reported)")
    ap.add_argument("--loop-impressions", type=int, default=2_000, help="impressions per timed loop run")
    ap.add_argument("--loop-repeats", type=int, default=3, help="timed loop runs (best is reported)")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: torch's default, all cores; use 1 when other jobs load the machine)",
    )
    ap.add_argument("--presets", default="xlarge,large,small", help="comma-separated presets")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    results = {}
    for preset in args.presets.split(","):
        cfg = load(SimConfig, CONFIGS / f"{preset}.yaml")
        t = time.perf_counter()
        sim = Simulator(cfg)
        init_s = time.perf_counter() - t
        vec = vectorised_rate(sim, args.batch, args.repeats)
        loop = loop_rate(sim, args.loop_impressions, args.loop_repeats)
        results[preset] = (vec, loop)
        del sim
        print(
            f"{preset}: n_products={cfg.n_products} n_users={cfg.n_users} init_s={init_s:.2f} "
            f"impressions_per_s={vec:.0f} loop_impressions_per_s={loop:.0f} speedup={vec / loop:.1f} "
            f"torch_threads={torch.get_num_threads()} load1={os.getloadavg()[0]:.2f} "
            f"rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}",
            flush=True,
        )
    vec, loop = results.get("small", next(iter(results.values())))
    print(
        f"simulator: impressions_per_s={vec:.0f} loop_impressions_per_s={loop:.0f} speedup={vec / loop:.1f}"
    )


if __name__ == "__main__":
    main()
