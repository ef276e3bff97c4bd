"""Off-policy evaluation accuracy: do the estimators' 95% intervals cover the simulator's exact value?

Design, and why:
- World: the small test catalogue, SimConfig(n_products=200, n_categories=10, n_users=3000,
  consideration_size=30) (tests/recsys_rl/helpers.SMALL). Small so that 50 repetitions run in minutes,
  and so that whole-banner IPS has a chance at all: its weight is a product of five per-slot ratios.
- Logging policy: the simulator's PopularityBehaviour (context-free Plackett–Luce over log popularity),
  with exact banner propensities in the log. Logs go through Parquet and ``log_import.import_logs``, as
  the CLI reads them. Behaviour per-position marginals are the empirical show rates (what the CLI uses
  for event-schema logs; exact in the limit for this context-free logger).
- Target policies in the aggregate, chosen so whole-banner IPS is meaningful (effective sample size in
  the hundreds or more out of 20k):
    reference  — the baseline trained with ``train_baseline`` on separate logs (20k impressions), at T=1;
    tilted     — the reference fine-tuned offline for a few hundred steps (``offline_finetune``, KL target
                 0.5 nats), its logits then shrunk halfway towards the logging policy's:
                 log μ + ½(s_ft − log μ), a conservative roll-out of the fine-tuned policy;
    uniform    — every ordered banner equally likely.
  Reported on its own line and NOT in the aggregate: the fine-tuned policy itself. Its whole-banner
  weights have an ESS under a hundred out of 20k (a few logged banners carry most of the weight), so
  IPS/SNIPS intervals are meaningless there, while the per-position estimators (IIPS, DR) stay
  accurate: the reason DR is the default for slates.
- Truth: V(π) = E_user E_context E_{banner~π}[exact expected graded reward] (``sim.expected``), averaged
  over --truth-samples fresh (user, context, banner) draws; its standard error is printed and is far
  below the estimators'.
- Repetitions: each draws a fresh log of --impressions impressions (seed 1000 * --seed + repetition)
  and evaluates every target with IPS, SNIPS, IIPS and DR (cross-fitted gradient boosting, 30 trees;
  Rao–Blackwellised target marginals from --samples sampled banners per context). Coverage = share of
  repetitions whose normal 95% interval contains the truth; RMSE = root mean squared error over
  repetitions. The aggregate pools the three targets' repetitions. With 50 repetitions a coverage has a
  standard error of about 0.03 (the three targets share each log, so pooling helps less than 3x): run
  --seed 1, 2, ... for independent draws.

    python benchmarks/ope_accuracy.py [--reps 50] [--impressions 20000] [--seed 0] [--no-extra]

Last line: ope: coverage_ips=<x> coverage_snips=<x> coverage_dr=<x> rmse_ips=<x> rmse_dr=<x>
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from recsys_rl import slate
from recsys_rl.baseline import train_baseline
from recsys_rl.config import BaselineConfig, PolicyConfig, SimConfig, TrainConfig, load_reward
from recsys_rl.log_import import import_logs
from recsys_rl.offline import offline_finetune
from recsys_rl.ope.pipeline import evaluate_policy
from recsys_rl.records import BANNER_SIZE
from recsys_rl.rewards import expected_reward
from simulator import Simulator
from simulator.behaviour import PopularityBehaviour
from simulator.logged import generate_logs

WORLD = SimConfig(n_products=200, n_categories=10, n_users=3000, consideration_size=30)
POLICY = PolicyConfig(embed_dim=16, hidden_dim=64)
BASELINE = BaselineConfig(logged_impressions=20_000, epochs=2)
FINETUNE = TrainConfig(total_impressions=100_000, minibatch_size=512, kl_target=0.5)
ESTIMATORS = ("ips", "snips", "iips", "dr")
TRAIN_LOG_SEED = 2**40 + 1  # far from the evaluation logs' seeds (1000 * --seed + repetition)
TRUTH_SEED = 2**40 + 2
TRUTH_BLOCK = 50_000


def exact_value(sim: Simulator, policy, scheme, n: int, seed: int) -> tuple[float, float]:
    """(mean, standard error) of the exact expected reward over n fresh (user, context, PL banner) draws."""
    g = torch.Generator().manual_seed(seed)
    values = []
    for start in range(0, n, TRUTH_BLOCK):
        users = sim.sample_users(min(TRUTH_BLOCK, n - start), g)
        contexts = sim.contexts(users, g)
        with torch.no_grad():
            banners = slate.gumbel_topk(policy(contexts), BANNER_SIZE, g)
        values.append(expected_reward(scheme, sim.expected(users, banners)).double())
    v = torch.cat(values)
    return v.mean().item(), (v.std() / len(v) ** 0.5).item()


def targets(sim: Simulator, scheme, seed: int):
    """The reference, the tilted fine-tune, uniform, and the fine-tuned policy itself: name -> logits fn."""
    with tempfile.TemporaryDirectory() as d:
        train_logs = import_logs(
            generate_logs(sim, BASELINE.logged_impressions, d, seed=TRAIN_LOG_SEED, progress=False),
            sim.n_products,
        ).batch
    reference = train_baseline(train_logs, sim.n_products, POLICY, BASELINE, seed, progress=False)
    tuned, _ = offline_finetune(reference, train_logs, scheme, FINETUNE, seed, progress=False)
    tuned = tuned.eval()
    log_mu = PopularityBehaviour(sim.popularity).log_p.float()
    n = sim.n_products
    policies = {
        "reference": reference.logits,
        "tilted": lambda ctx: log_mu + 0.5 * (tuned.logits(ctx) - log_mu),
        "uniform": lambda ctx: torch.zeros(len(ctx), n),
        "fine-tuned": tuned.logits,
    }
    return policies, reference


def summarise(errors: np.ndarray, covered: np.ndarray) -> tuple[float, float]:
    return float(covered.mean()), float(np.sqrt((errors**2).mean()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--impressions", type=int, default=20_000)
    ap.add_argument("--truth-samples", type=int, default=400_000)
    ap.add_argument("--seed", type=int, default=0, help="logs use seeds 1000 * seed + repetition")
    ap.add_argument("--samples", type=int, default=16, help="target banners per context for marginals")
    ap.add_argument("--no-extra", action="store_true", help="skip the un-tilted fine-tuned policy")
    args = ap.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(1)
    start = time.perf_counter()

    sim = Simulator(WORLD)
    scheme = load_reward("graded")
    policies, reference = targets(sim, scheme, seed=0)  # the same targets whatever --seed draws
    if args.no_extra:
        policies.pop("fine-tuned")
    truth = {}
    for name, fn in policies.items():
        truth[name] = exact_value(sim, fn, scheme, args.truth_samples, TRUTH_SEED)
        print(
            f"truth {name}: {truth[name][0]:.4f} ± {truth[name][1]:.4f} (exact expected reward per impression)"
        )

    # [policy][estimator] -> (reps, 4): value, ci_low, ci_high, ess
    results = {p: {e: np.empty((args.reps, 4)) for e in ESTIMATORS} for p in policies}
    for rep in range(args.reps):
        with tempfile.TemporaryDirectory() as d:
            logged = import_logs(
                generate_logs(sim, args.impressions, d, seed=1000 * args.seed + rep, progress=False),
                sim.n_products,
            ).batch
        for name, fn in policies.items():
            res = evaluate_policy(
                logged,
                fn,
                scheme,
                ESTIMATORS,
                reference=reference.logits,
                n_samples=args.samples,
                dm_samples=4,
                reward_model=HistGradientBoostingRegressor(
                    max_iter=30, max_leaf_nodes=15, early_stopping=False, random_state=rep
                ),
                seed=1000 * args.seed + rep,
            )
            for e, est in res.estimates.items():
                results[name][e][rep] = (est.value, est.ci_low, est.ci_high, est.ess)
        if (rep + 1) % 10 == 0:
            print(f"  {rep + 1}/{args.reps} repetitions, {time.perf_counter() - start:.0f}s", flush=True)

    pooled = {e: ([], []) for e in ESTIMATORS}
    for name in policies:
        v = truth[name][0]
        parts = []
        for e in ESTIMATORS:
            r = results[name][e]
            errors, covered = r[:, 0] - v, (r[:, 1] <= v) & (v <= r[:, 2])
            cov, rmse = summarise(errors, covered)
            parts.append(
                f"{e}: cov={cov:.2f} rmse={rmse:.4f} bias={errors.mean():+.4f} ess={r[:, 3].mean():.0f}"
            )
            if name != "fine-tuned":
                pooled[e][0].append(errors)
                pooled[e][1].append(covered)
        tag = " (not in aggregate: whole-banner IPS is meaningless here)" if name == "fine-tuned" else ""
        print(f"policy={name}{tag} truth={v:.4f}\n    " + "\n    ".join(parts))

    agg = {e: summarise(np.concatenate(pooled[e][0]), np.concatenate(pooled[e][1])) for e in ESTIMATORS}
    print(f"aggregate over {len(policies) - ('fine-tuned' in policies)} targets x {args.reps} reps of "
          f"{args.impressions:,} impressions; iips: coverage={agg['iips'][0]:.3f} rmse={agg['iips'][1]:.4f}; "
          f"{time.perf_counter() - start:.0f}s")  # fmt: skip
    print(
        f"ope: coverage_ips={agg['ips'][0]:.3f} coverage_snips={agg['snips'][0]:.3f} "
        f"coverage_dr={agg['dr'][0]:.3f} rmse_ips={agg['ips'][1]:.4f} rmse_dr={agg['dr'][1]:.4f}"
    )


if __name__ == "__main__":
    main()
