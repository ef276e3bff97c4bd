"""Preference optimisation from logs beside the top-K correction and the reward-model path.

Design, and why:
- World, reference and logs are ``benchmarks/reward_model.py``'s: the small catalogue, the baseline
  trained on 20k impressions of the popularity logger, then --impressions (100k) impressions of the
  exploring logger (the reference with epsilon = --epsilon uniform exploration), seeded. Everything
  learns from these logs alone; the simulator only judges, exactly (``Evaluator``, graded reward,
  fraction of the reference->oracle gap closed by the greedy policy, exact KL to the reference).
- Preference objectives (``recsys_rl.finetune.preference``): each of --objectives over a beta sweep
  (--betas), --steps minibatches of 512 examples. S-DPO weights negatives by the world's position bias
  (given, not fitted). The best beta of each objective is the one with the highest gap at KL <= 3.
  With --weighting both, each run is repeated with importance weights pi_ref / mu.
- Top-K off-policy correction: ``offline_finetune`` with the reward-model benchmark's TrainConfig.
- Reward-model path: ``fit_reward_model`` (embed_dim 4, hidden_dim 32) then ``rm_finetune`` at the
  default budget; rm_seconds is fit + fine-tune wall time. Every wall time is measured on the same
  machine in the same run.
- Measured (seed 0, 2026-12-06, 2 shared CPU cores, --betas 0.05,0.2,1.0, 2000 steps): top-K 0.422
  (KL 2.62); reward model 0.484 (KL 2.67, 153 s); DPO best 0.282 at beta 0.2 (KL 2.39, 23 s; beta 0.05:
  0.224 at KL 9.9; beta 1: 0.155 at KL 0.12); S-DPO best 0.124 at beta 1 (KL 1.06; lower beta runs past
  KL 3 and loses value: -0.03 at KL 7.9, -0.17 at KL 15.6); KTO best 0.061 at beta 1 (KL 2.21). So on
  this world no preference objective reaches the reward-model path or the top-K correction yet; DPO is
  the best of them and ~6x faster than the reward-model path.
  --betas 0.1,0.3 --weighting both (same logs): DPO 0.286 at KL 1.18 (beta 0.3), weighted 0.296 at KL
  1.20; S-DPO at beta 0.3 0.013 (KL 5.5), weighted 0.203 (KL 6.6); beta 0.1 -0.097 (KL 12.1), weighted
  0.176 (KL 12.8); KTO at beta 0.3 0.016 (KL 4.0), weighted 0.025. Importance weights help every
  objective here, S-DPO most (the exploring logger is not the reference the losses assume).
  A logger far from the reference (--epsilon 0.5 --betas 0.3,1.0 --weighting both): top-K 0.435;
  DPO best 0.189 (KL 1.13), weighted 0.250 (KL 1.13); S-DPO best 0.065 (KL 1.07), weighted 0.113
  (KL 2.01): the importance-weighted variant beats the unweighted one at every beta.

    python benchmarks/preference.py [--impressions 100000] [--seed 0] [--betas 0.05,0.1,0.2,0.5]
        [--objectives sdpo,kto,dpo] [--steps 2000] [--epsilon 0.1] [--weighting none|importance|both]

Last line: preference: kto_gap=<x> sdpo_gap=<x> dpo_gap=<x> rm_gap=<x> topk_gap=<x> best_kl=<x>
best_seconds=<x> rm_seconds=<x>
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from reward_model import BASELINE, POLICY, TRAIN, WORLD

from recsys_rl.baseline import train_baseline
from recsys_rl.config import PreferenceConfig, builtin_rewards, load_reward
from recsys_rl.evaluation import Evaluator
from recsys_rl.finetune.logs import offline_finetune
from recsys_rl.finetune.preference import preference_finetune
from recsys_rl.finetune.reward_model import rm_finetune
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.reward_model import RewardModelConfig, fit_reward_model
from simulator import Simulator
from simulator.behaviour import ExploringBehaviour
from simulator.logged import generate_logs

KL_BUDGET = 3.0
"""nats per banner: the reward-model path's default budget (0.6 per displayed product x 5)."""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impressions", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--betas", default="0.05,0.1,0.2,0.5")
    ap.add_argument("--objectives", default="sdpo,kto,dpo")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--epsilon", type=float, default=0.1, help="the logger's uniform exploration")
    ap.add_argument("--weighting", default="none", choices=["none", "importance", "both"])
    ap.add_argument("--skip-rm", action="store_true", help="no reward-model path (its figures print nan)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    sim, scheme = Simulator(WORLD), load_reward("graded")
    with tempfile.TemporaryDirectory() as d:
        pop = read_logs(
            generate_logs(
                sim, BASELINE.logged_impressions, f"{d}/pop", seed=2**40 + args.seed, progress=False
            )
        )
        reference = train_baseline(pop, sim.n_products, POLICY, BASELINE, args.seed, progress=False)
        logger = ExploringBehaviour(reference.logits, sim.n_products, args.epsilon)
        logs = read_logs(
            generate_logs(
                sim, args.impressions, f"{d}/explore", seed=args.seed, progress=False, behaviour=logger
            )
        )
    ev = Evaluator(sim, reference, scheme, builtin_rewards(), TRAIN.eval_users, args.seed + 1000)
    print(
        f"{len(logs):,} logged impressions (epsilon {args.epsilon}), {time.perf_counter() - start:.0f}s",
        flush=True,
    )

    t0 = time.perf_counter()
    topk, _ = offline_finetune(
        reference, logs, scheme, TRAIN.model_copy(update={"minibatch_size": 512}), args.seed, progress=False
    )
    tk = ev(topk.eval())
    print(
        f"topk: gap={tk['oracle_gap_closed']:.4f} kl={tk['kl_to_reference']:.3f} "
        f"seconds={time.perf_counter() - t0:.0f}",
        flush=True,
    )

    best: dict[str, tuple[float, float, float]] = {}  # objective -> (gap, kl, seconds) at KL <= 3
    weightings = ["none", "importance"] if args.weighting == "both" else [args.weighting]
    exam = list(WORLD.position_bias)
    for objective in args.objectives.split(","):
        for weighting in weightings:
            for beta in [float(b) for b in args.betas.split(",")]:
                cfg = PreferenceConfig(
                    objective=objective, beta=beta, weighting=weighting, steps=args.steps, examination=exam
                )
                t0 = time.perf_counter()
                policy, _ = preference_finetune(reference, logs, scheme, cfg, args.seed, progress=False)
                seconds = time.perf_counter() - t0
                m = ev(policy.eval())
                gap, kl = m["oracle_gap_closed"], m["kl_to_reference"]
                print(
                    f"{objective} weighting={weighting} beta={beta:g}: gap={gap:.4f} kl={kl:.3f} "
                    f"seconds={seconds:.0f}",
                    flush=True,
                )
                key = objective if weighting == weightings[0] else f"{objective}+iw"
                if kl <= KL_BUDGET and gap > best.get(key, (float("-inf"),))[0]:
                    best[key] = (gap, kl, seconds)
    for key, (gap, kl, seconds) in best.items():
        print(f"best {key}: gap={gap:.4f} kl={kl:.3f} seconds={seconds:.0f}", flush=True)

    rm_gap, rm_seconds = float("nan"), float("nan")
    if not args.skip_rm:
        t0 = time.perf_counter()
        rm_cfg = RewardModelConfig(seed=args.seed, embed_dim=4, hidden_dim=32)
        rm = fit_reward_model(logs, sim.n_products, rm_cfg, progress=False).model
        policy, _ = rm_finetune(reference, rm, logs.contexts, scheme, TRAIN, args.seed, progress=False)
        rm_seconds = time.perf_counter() - t0
        rl = ev(policy.eval())
        rm_gap = rl["oracle_gap_closed"]
        print(
            f"reward model: gap={rm_gap:.4f} kl={rl['kl_to_reference']:.3f} seconds={rm_seconds:.0f}",
            flush=True,
        )

    nan = (float("nan"), float("nan"), float("nan"))
    top = max(best.values(), default=nan, key=lambda v: v[0])
    print(
        f"preference: kto_gap={best.get('kto', nan)[0]:.4f} sdpo_gap={best.get('sdpo', nan)[0]:.4f} "
        f"dpo_gap={best.get('dpo', nan)[0]:.4f} rm_gap={rm_gap:.4f} topk_gap={tk['oracle_gap_closed']:.4f} "
        f"best_kl={top[1]:.4f} best_seconds={top[2]:.1f} rm_seconds={rm_seconds:.1f}"
    )


if __name__ == "__main__":
    main()
