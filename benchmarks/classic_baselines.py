"""The fine-tune from logs against the classic yardsticks, in four worlds, valued exactly.

Worlds: our default click level (configs/sim/small.yaml) and a realistic one (configs/sim/realistic.yaml),
each with today's tastes and with repeat interest (configs/sim/repeat_interest.yaml: the products a user
keeps viewing are the best to show). 1,000 products; each world logged by a uniform-random logger for
``--impressions`` impressions. As ``train --logs`` does, the last 20% of the logs are held out and the
reference (fitted and chosen on the held-out part, as ``train --logs`` does) and the fine-tune (every
setting at its default, the same in every world; early-stopped on the held-out part) learn from the
first 80%; so do the four classics (popularity, co-visitation, re-show the context, IPS logistic
regression). Every policy's greedy banner is valued by the simulator's exact expectations on one fixed
set of users per world. Last line:
classic_baselines: worlds=4 wins=<n> min_ratio=<x> mean_ratio=<x> ref_wins=<n>
with ratio = the fine-tune's reward_graded / the best classic's, wins = worlds where the ratio >= 1 and
ref_wins = worlds where the fine-tune is >= the reference.

  python benchmarks/classic_baselines.py [--impressions 200000] [--seed 0] [--worlds default,realistic]
"""

from __future__ import annotations

import argparse
import time

import torch

from recsys_rl.config import RunConfig, SimConfig, builtin_rewards, load, load_reward
from recsys_rl.evaluation import Evaluator, greedy_banners
from recsys_rl.holdout import split_logs, time_split
from recsys_rl.jobs.offline import best_finetune
from recsys_rl.records import LoggedBatch
from recsys_rl.reference import fit_reference
from recsys_rl.yardsticks.table import classic_rows, fit_classics
from simulator import Simulator
from simulator.behaviour import PopularityBehaviour

REALISTIC = load(SimConfig, "configs/sim/realistic.yaml")
REPEAT = load(SimConfig, "configs/sim/repeat_interest.yaml")
WORLDS = {
    "default": load(SimConfig, "configs/sim/small.yaml"),
    "realistic": REALISTIC,
    "default+repeat": REPEAT,
    "realistic+repeat": REPEAT.model_copy(update={"click_bias": REALISTIC.click_bias}),
}


def uniform_logs(sim: Simulator, n: int, seed: int) -> LoggedBatch:
    """n impressions served by a uniform-random logger (Plackett-Luce with flat logits), in memory."""
    g = torch.Generator().manual_seed(seed)
    users = sim.sample_users(n, g)
    contexts = sim.contexts(users, g)
    banners = PopularityBehaviour(sim.popularity, alpha=0.0, k=sim.banner_size).sample(contexts, g)
    return LoggedBatch(contexts, banners, sim.respond(users, banners.items, g))


def world_rows(name: str, sim_cfg: SimConfig, impressions: int, seed: int) -> dict[str, dict[str, float]]:
    cfg = RunConfig(sim=sim_cfg, seed=seed)
    scheme = load_reward(cfg.reward)
    t = time.perf_counter()
    sim = Simulator(sim_cfg)
    logs = uniform_logs(sim, impressions, seed)
    torch.manual_seed(cfg.seed)  # as train --logs: the same split, reference fit and best fine-tune
    train, held = split_logs(logs, time_split(len(logs), cfg.baseline.holdout_fraction))
    print(
        f"[{name}] logged {len(logs):,} uniform-random impressions in {time.perf_counter() - t:.1f}s",
        flush=True,
    )
    fit = fit_reference(
        train, held, scheme, sim.n_products, cfg.policy, cfg.baseline, cfg.seed, progress=False
    )
    reference = fit.policy
    print(
        f"[{name}] reference trained at {time.perf_counter() - t:.1f}s (epoch {fit.epoch}, "
        f"history_weight {fit.history_weight}, context_weight {fit.context_weight})",
        flush=True,
    )
    policy, _, step = best_finetune(reference, train, held, scheme, cfg, progress=False)
    print(f"[{name}] fine-tuned at {time.perf_counter() - t:.1f}s (step {step} kept)", flush=True)
    classics = fit_classics(train, scheme, sim.n_products, cfg.seed)
    print(f"[{name}] classics fitted at {time.perf_counter() - t:.1f}s", flush=True)
    ev = Evaluator(sim, reference, scheme, builtin_rewards(), cfg.train.eval_users, cfg.seed + 1000)
    rows = {
        "oracle": ev.oracle_metrics,
        "reference": ev.reference_metrics,
        "fine-tuned": ev.score_banners(
            greedy_banners(policy.eval().logits, ev.eval_set.contexts, sim.n_products)
        ),
        **classic_rows(ev, classics),
    }
    for row, m in rows.items():
        print(f"[{name}] {row:16s} reward_graded={m['reward_graded']:.4f} ctr={m['ctr']:.4%}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impressions", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--worlds", default=",".join(WORLDS), help=f"comma-separated subset of {', '.join(WORLDS)}"
    )
    args = ap.parse_args()
    names = args.worlds.split(",")
    unknown = [n for n in names if n not in WORLDS]
    if unknown:
        ap.error(f"--worlds: unknown world(s) {', '.join(unknown)}; known: {', '.join(WORLDS)}")
    torch.set_num_threads(1)
    ratios, ref_wins = [], 0
    for name in names:
        rows = world_rows(name, WORLDS[name], args.impressions, args.seed)
        best = max(
            ("popularity", "covisitation", "reshow_context", "ips_logreg"),
            key=lambda r: rows[r]["reward_graded"],
        )
        ft = rows["fine-tuned"]["reward_graded"]
        ratios.append(ft / rows[best]["reward_graded"])
        ref_wins += ft >= rows["reference"]["reward_graded"]
        print(f"[{name}] best classic {best}: fine-tuned / best = {ratios[-1]:.3f}", flush=True)
    wins = sum(r >= 1.0 for r in ratios)
    print(
        f"classic_baselines: worlds={len(ratios)} wins={wins} min_ratio={min(ratios):.3f} "
        f"mean_ratio={sum(ratios) / len(ratios):.3f} ref_wins={ref_wins}"
    )


if __name__ == "__main__":
    main()
