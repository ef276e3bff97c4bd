"""Learning quality on the small catalogue: fraction of the reference->oracle gap closed on `graded`.

The fine-tuned policy (KL-constrained PPO from the reference) against two classic bandits given the
same impression budget: epsilon-greedy and linear Thompson sampling. Exact expected rewards from the
simulator, one fixed evaluation set of users. Last line:
learning: gap_closed=<x> kl=<x> impressions=<n> seconds=<s> linucb_gap_closed=<x> egreedy_gap_closed=<x>
(the linear bandit is Thompson sampling, reported in the `linucb_gap_closed` slot).

  python benchmarks/learning_quality.py [--impressions 1000000] [--seed 0] [--no-bandits] [--banner-size 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from recsys_rl.baseline import train_baseline
from recsys_rl.config import SimConfig, builtin_rewards, load_reward, load_run
from recsys_rl.evaluation import Evaluator, greedy_banners
from recsys_rl.finetune.environment import finetune
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.policy import trainable_copy
from recsys_rl.yardsticks.bandits import EpsilonGreedy, LinearThompson, run_bandit
from simulator import Simulator
from simulator.logged import generate_logs


def half_gap_impressions(history: list[dict[str, float]], level: float = 0.5) -> int | None:
    """Impressions at the first evaluation whose gap closed reaches ``level`` (None if none did)."""
    for m in history:
        if m["oracle_gap_closed"] >= level:
            return int(m["impressions"])
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impressions", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-bandits", action="store_true")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--banner-size", type=int, default=5, help="K, products per banner (sim.banner_size)")
    args = ap.parse_args()

    cfg = load_run(None, {"seed": args.seed, "sim": "small", "train.total_impressions": args.impressions})
    cfg.sim = SimConfig(
        **{**cfg.sim.model_dump(), "banner_size": args.banner_size}
    )  # the default curve cut to K
    torch.set_num_threads(cfg.torch_threads)
    sim = Simulator(cfg.sim)
    scheme = load_reward("graded")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        logs = read_logs(
            generate_logs(sim, cfg.baseline.logged_impressions, d, seed=args.seed, progress=False)
        )
    ref = train_baseline(logs, sim.n_products, cfg.policy, cfg.baseline, cfg.seed, progress=args.progress)
    ev = Evaluator(sim, ref, scheme, builtin_rewards(), cfg.train.eval_users, cfg.seed + 1000)
    print(
        f"reference graded={ev.reference_metrics['reward_graded']:.4f} "
        f"oracle graded={ev.oracle_metrics['reward_graded']:.4f}"
    )

    def report(impr, m):
        print(
            f"  impressions={impr:>9,d} gap_closed={m['oracle_gap_closed']:.3f} kl={m['kl_to_reference']:.3f} "
            f"beta={m.get('beta', float('nan')):.4f} graded={m['reward_graded']:.4f}",
            flush=True,
        )

    start = time.perf_counter()
    res = finetune(
        trainable_copy(ref), ref, sim, scheme, cfg.train, ev, cfg.seed, on_eval=report, progress=args.progress
    )
    seconds = time.perf_counter() - start
    gap, kl = res.final["oracle_gap_closed"], res.final["kl_to_reference"]
    print(f"fine-tuned: gap_closed={gap:.3f} kl={kl:.3f} (target {cfg.train.kl_target}) in {seconds:.1f}s")
    half = half_gap_impressions(res.history)
    print(f"half_gap_impressions={'never' if half is None else half} (first evaluation at gap_closed >= 0.5)")

    bandit_gaps = {}
    if not args.no_bandits:
        for name, agent in (
            ("linucb", LinearThompson(sim.n_products, ref)),
            ("egreedy", EpsilonGreedy(sim.n_products, banner_size=sim.banner_size)),
        ):
            t = time.perf_counter()
            run_bandit(agent, sim, scheme, res.impressions, 4096, cfg.seed, progress=args.progress)
            m = ev.score_banners(greedy_banners(agent.logits, ev.eval_set.contexts))
            bandit_gaps[name] = ev.gap_closed(m["reward_graded"])
            print(f"{name}: gap_closed={bandit_gaps[name]:.3f} in {time.perf_counter() - t:.1f}s")
    print(
        f"learning: gap_closed={gap:.4f} kl={kl:.4f} impressions={res.impressions} seconds={seconds:.1f} "
        f"linucb_gap_closed={bandit_gaps.get('linucb', float('nan')):.4f} "
        f"egreedy_gap_closed={bandit_gaps.get('egreedy', float('nan')):.4f}"
    )


if __name__ == "__main__":
    main()
