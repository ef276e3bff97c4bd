"""The closed feedback loop on the small catalogue: plain against mitigated, and the planted bias.

Round 0's reference is trained on the behaviour policy's logs; each loop runs ``--rounds`` rounds of
serve -> log -> retrain the reference -> fine-tune (``recsys_rl.finetune.closed_loop``), the plain loop
with every mitigation off, the mitigated one with a debiased reference,
an exposure cap and an exploration floor (the KL on the latest reference). Rises are final round minus round 0; gap (oracle gap closed,
against round 0's reference) and Jaccard at the final round. The last line:

feedback_loop: rounds=<n> gini_rise_plain=<x> gini_rise_mitigated=<x> tail_share_plain=<x>
tail_share_mitigated=<x> gap_plain=<x> gap_mitigated=<x> jaccard_plain=<x> jaccard_oracle=<x>
planted_bias_removed=<x>   (one line)

Run: python benchmarks/feedback_loop.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import pandas as pd
import torch

from recsys_rl.baseline import train_baseline
from recsys_rl.cli.common import audit_world
from recsys_rl.config import BaselineConfig, LoopConfig, RunConfig, TrackingConfig
from recsys_rl.jobs.feedback_loop import PLAIN, loop_job
from recsys_rl.jobs.planted_bias import planted_bias_check
from recsys_rl.logdata.parquet import read_logs
from simulator import Simulator
from simulator.logged import generate_logs

MITIGATED = {"debias": True, "exposure_cap": 3.0, "exploration_floor": 0.05}
"""Measured (seed 0, 10 rounds; plain loop: Gini rise 0.417, final gap 0.575), each mitigated variant's
Gini rise / final gap: this one 0.164 / 0.448; with anchor="round0" too -0.027 / 0.408; debias and
floor only 0.246 / 0.474; exposure cap only 0.225 / 0.484. None keeps the gap within 0.02 of the plain
loop's: the plain loop's value grows with its concentration."""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--impressions-per-round", type=int, default=5_000)
    ap.add_argument("--finetune-impressions", type=int, default=20_480)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        loop = LoopConfig(
            rounds=args.rounds,
            impressions_per_round=args.impressions_per_round,
            finetune_impressions=args.finetune_impressions,
            eval_users=1024,
        )
        cfg = RunConfig(
            seed=args.seed,
            baseline=BaselineConfig(logged_impressions=20_000, epochs=2),
            train={"contexts_per_batch": 256, "minibatch_size": 512, "eval_users": 1024},
            loop=loop,
            tracking=TrackingConfig(tracking_uri=f"sqlite:///{d}/mlflow.db", experiment="feedback-loop"),
        )
        sim = Simulator(cfg.sim)  # the small preset: 1,000 products
        world = audit_world(sim)
        logs = read_logs(
            generate_logs(sim, cfg.baseline.logged_impressions, f"{d}/logs", seed=args.seed, progress=False)
        )
        ref = train_baseline(logs, sim.n_products, cfg.policy, cfg.baseline, cfg.seed, False)
        print(f"round-0 reference trained in {time.perf_counter() - t0:.0f} s", flush=True)
        variants = {
            "plain": loop.model_copy(update=PLAIN),
            "mitigated": loop.model_copy(update=MITIGATED),
        }
        res = loop_job(cfg, sim, world, logs, ref, variants, progress=False)
        cols = [
            "variant",
            "round",
            "oracle_gap_closed",
            "exposure_gini",
            "tail_share",
            "popularity_lift",
            "jaccard",
        ]
        with pd.option_context("display.width", 200, "display.max_rows", 100):
            print(res.history[cols].round(4).to_string(index=False))
        print(
            f"oracle: gini={res.oracle['exposure_gini']:.4f} tail_share={res.oracle['tail_share']:.4f} "
            f"jaccard={res.oracle['jaccard']:.4f}; round-0 reference: gini={res.reference['exposure_gini']:.4f} "
            f"tail_share={res.reference['tail_share']:.4f} jaccard={res.reference['jaccard']:.4f}",
            flush=True,
        )
        planted = planted_bias_check(cfg, sim, world, ref)
        print("planted bias: " + " ".join(f"{k}={v:.4f}" for k, v in planted.items()))
        print(f"seconds={time.perf_counter() - t0:.0f}")
        plain, mitigated = res.final("plain"), res.final("mitigated")
        print(
            f"feedback_loop: rounds={args.rounds} "
            f"gini_rise_plain={res.rise('plain', 'exposure_gini'):.4f} "
            f"gini_rise_mitigated={res.rise('mitigated', 'exposure_gini'):.4f} "
            f"tail_share_plain={plain['tail_share']:.4f} tail_share_mitigated={mitigated['tail_share']:.4f} "
            f"gap_plain={plain['oracle_gap_closed']:.4f} gap_mitigated={mitigated['oracle_gap_closed']:.4f} "
            f"jaccard_plain={plain['jaccard']:.4f} jaccard_oracle={res.oracle['jaccard']:.4f} "
            f"planted_bias_removed={planted['removed']:.4f}"
        )


if __name__ == "__main__":
    main()
