"""Sample efficiency: the fraction of the reference->oracle gap closed after 10k, 50k, 200k and 1M impressions.

The set-up of ``benchmarks/learning_quality.py`` (small catalogue, ``graded`` reward, the reference
trained on 100k popularity-logged impressions, exact evaluation on the fixed evaluation users), but a
*fresh* seeded run per budget: a shop with 10,240 impressions of traffic gets a run planned for 10,240
impressions (its learning-rate schedule, its batch sizes), not the first 1% of a 1M run. For each budget
the fine-tune and the learning benchmark's two classic bandits (linear Thompson sampling and
epsilon-greedy, fed the same number of impressions, updating as often as the fine-tune) are scored
exactly. The reference is trained once (the same seed would give the same one for every budget).

Then the same protocol in the realistic world (``configs/sim/realistic.yaml``: the small world with
click logit intercept -7, so the reference's displayed products are clicked 0.3-1% of the time and the
oracle's 2-4%, as in public logs, not ~33% as in the default world) at 204,800 and 1,024,000
impressions: its own logs and reference, the same training settings as the default world's budgets (no
per-world tuning), exact evaluation. ``--no-realistic`` skips it.

Prints a per-budget table per world, logs learning-curve plots (gap closed against impressions, log x)
and the tables to one MLflow run (a SQLite store in a new temporary directory, kept, unless
``--tracking-uri``). Last line:

sample_efficiency: gap_10k=<x> gap_50k=<x> gap_200k=<x> gap_1m=<x> kl_1m=<x> impressions_to_half_gap=<n> realistic_gap_200k=<x> realistic_gap_1m=<x>

(budgets not run print ``nan``; ``impressions_to_half_gap`` is the first evaluation of the default
world's largest budget's run whose gap closed reaches 0.5, ``never`` if none did).

  python benchmarks/sample_efficiency.py [--budgets 10240,51200,204800,1024000] [--seed 0]
      [--preset configs/train/fast.yaml] [--large-preset configs/train/warm.yaml --large-from 100000]
      [--set train.lr=0.003 ...] [--no-bandits] [--no-realistic] [--realistic-budgets 204800,1024000]

The settings a shop would pick for its traffic: --preset for budgets below --large-from, --large-preset
(if given) from there on, in both worlds; the tables say which ran where.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import dataclass

import mlflow
import pandas as pd
import torch
import yaml

from recsys_rl import tracking
from recsys_rl.baseline import train_baseline
from recsys_rl.config import RunConfig, TrackingConfig, builtin_rewards, load_reward, load_run
from recsys_rl.evaluation import Evaluator, greedy_banners
from recsys_rl.finetune.dyna import Dyna
from recsys_rl.finetune.environment import finetune
from recsys_rl.finetune.warm_start import warm_start
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.policy import BannerPolicy, trainable_copy
from recsys_rl.records import LoggedBatch
from recsys_rl.yardsticks.bandits import EpsilonGreedy, LinearThompson, run_bandit
from simulator import Simulator
from simulator.logged import generate_logs

BUDGETS = (10_240, 51_200, 204_800, 1_024_000)
REALISTIC_BUDGETS = (204_800, 1_024_000)
LABELS = {10_240: "10k", 51_200: "50k", 204_800: "200k", 1_024_000: "1m"}


@dataclass
class World:
    cfg: RunConfig
    sim: Simulator
    logs: LoggedBatch
    reference: BannerPolicy
    evaluator: Evaluator


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """``key=value`` pairs (values parsed as YAML scalars) -> dotted-key overrides."""
    out = {}
    for p in pairs:
        if "=" not in p:
            raise SystemExit(f"--set: expected key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def build_world(
    seed: int, preset: str | None, overrides: dict[str, object], sim_name: str = "small"
) -> World:
    """The world ``sim_name`` (a preset under configs/sim/): its logs, the reference trained on them, and
    the evaluator, under the run settings of ``preset`` (the embedded defaults if None)."""
    cfg = load_run(preset, {"seed": seed, "sim": sim_name, **overrides})
    torch.set_num_threads(cfg.torch_threads)
    sim = Simulator(cfg.sim)
    with tempfile.TemporaryDirectory() as d:
        logs = read_logs(generate_logs(sim, cfg.baseline.logged_impressions, d, seed=seed, progress=False))
    ref = train_baseline(logs, sim.n_products, cfg.policy, cfg.baseline, cfg.seed, progress=False)
    ev = Evaluator(
        sim, ref, load_reward(cfg.reward), builtin_rewards(), cfg.train.eval_users, cfg.seed + 1000
    )
    return World(cfg, sim, logs, ref, ev)


def run_finetune(w: World, budget: int) -> tuple[dict[str, float], list[dict[str, float]], float]:
    """A fresh fine-tune from the reference planned for ``budget`` impressions: (final, history, seconds)."""
    cfg = w.cfg.train.model_copy(update={"total_impressions": budget})
    start = time.perf_counter()
    policy, dyna, scheme = trainable_copy(w.reference), None, load_reward(w.cfg.reward)
    if w.cfg.warm_start.enabled:  # from the logs that trained the reference; no live impression spent
        ws = warm_start(w.reference, w.logs, scheme, w.cfg.train, w.cfg.warm_start, w.cfg.seed)
        policy = ws.policy
        if w.cfg.dyna.enabled:  # its reward model, refitted on the live impressions, scores virtual banners
            dyna = Dyna(ws.reward_model, w.logs, scheme, w.cfg.dyna, w.cfg.seed)
    res = finetune(
        policy, w.reference, w.sim, scheme, cfg, w.evaluator, w.cfg.seed, progress=False, dyna=dyna
    )
    return res.final, res.history, time.perf_counter() - start


def run_bandits(w: World, budget: int, batch: int) -> dict[str, float]:
    """Gap closed by each classic bandit after ``budget`` impressions, ``batch`` per round."""
    scheme, out = load_reward(w.cfg.reward), {}
    for name, agent in (
        ("thompson", LinearThompson(w.sim.n_products, w.reference)),
        ("egreedy", EpsilonGreedy(w.sim.n_products)),
    ):
        run_bandit(agent, w.sim, scheme, budget, batch, w.cfg.seed, progress=False)
        m = w.evaluator.score_banners(greedy_banners(agent.logits, w.evaluator.eval_set.contexts))
        out[name] = w.evaluator.gap_closed(m[f"reward_{scheme.name}"])
    return out


def curve_figure(table: pd.DataFrame, history: list[dict[str, float]] | None, world: str = "small catalogue"):
    """Gap closed against impressions (log x): one point per budget for each learner, plus the largest
    run's evaluations as a thin line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for col, style in (("finetune", "o-"), ("thompson", "s--"), ("egreedy", "^--")):
        if col in table:
            ax.plot(table.index, table[col], style, label=f"{col} (fresh run per budget)")
    if history:
        pts = [(h["impressions"], h["oracle_gap_closed"]) for h in history if h["impressions"] > 0]
        if pts:
            ax.plot(
                *zip(*pts, strict=True), "-", lw=0.8, alpha=0.6, label="fine-tune, largest run's evaluations"
            )
    ax.axhline(0.5, color="gray", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("impressions (log scale)")
    ax.set_ylabel("fraction of reference→oracle gap closed")
    ax.set_title(f"sample efficiency on the {world} (graded, exact evaluation)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def half_gap(history: list[dict[str, float]] | None) -> int | None:
    for h in history or []:
        if h["oracle_gap_closed"] >= 0.5:
            return int(h["impressions"])
    return None


def large_world(
    w: World, args: argparse.Namespace, overrides: dict[str, object], sim_name: str
) -> World | None:
    """``w``'s world (logs, reference, evaluation users) under --large-preset's train settings, if given."""
    if not args.large_preset:
        return None
    lc = load_run(args.large_preset, {"seed": args.seed, "sim": sim_name, **overrides})
    return World(lc, w.sim, w.logs, w.reference, w.evaluator)


def run_budgets(
    w: World, large: World | None, budgets: list[int], args: argparse.Namespace, prefix: str
) -> tuple[dict[int, dict[str, float]], list[dict[str, float]] | None]:
    """A fresh fine-tune (and the bandits) per budget in one world: ({budget: row}, the largest run's
    evaluations). Prints one line per budget, ``prefix`` naming the world."""
    rows, longest = {}, None
    for b in budgets:
        wb = large if large is not None and b >= args.large_from else w
        tc = wb.cfg.train
        final, history, sec = run_finetune(wb, b)
        row = {
            "finetune": final["oracle_gap_closed"],
            "kl": final["kl_to_reference"],
            "seconds": sec,
            "impr_per_update": float(tc.contexts_per_batch * tc.banners_per_context),
        }
        if not args.no_bandits:
            batch = args.bandit_batch or (tc.contexts_per_batch * tc.banners_per_context)
            row.update(run_bandits(w, b, min(batch, b)))
        rows[b], longest = row, history
        which = args.large_preset if wb is large else (args.preset or "defaults")
        print(
            f"  {prefix}budget={b:>9,d} [{which}] " + " ".join(f"{k}={v:.3f}" for k, v in row.items()),
            flush=True,
        )
    return rows, longest


def budget_table(rows: dict[int, dict[str, float]]) -> pd.DataFrame:
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "impressions"
    return table


def log_budgets(rows: dict[int, dict[str, float]], prefix: str) -> None:
    """One MLflow metric per column, stepped by budget: ``<prefix>finetune_gap``, ``<prefix>kl``, ..."""
    for b, row in rows.items():
        mlflow.log_metrics(
            {
                prefix + (k if k in ("kl", "seconds", "impr_per_update") else f"{k}_gap"): v
                for k, v in row.items()
                if math.isfinite(v)
            },
            step=b,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--budgets",
        default=",".join(str(b) for b in BUDGETS),
        help="comma-separated impression budgets (any of 10240,51200,204800,1024000 or others)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default=None, help="run config YAML (e.g. configs/train/fast.yaml)")
    ap.add_argument(
        "--large-preset",
        default=None,
        help="run config YAML for budgets >= --large-from (settings sized to more traffic)",
    )
    ap.add_argument("--large-from", type=int, default=100_000)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--no-bandits", action="store_true")
    ap.add_argument(
        "--no-realistic",
        action="store_true",
        help="skip the realistic world's budgets (its fields print nan)",
    )
    ap.add_argument(
        "--realistic-budgets",
        default=",".join(str(b) for b in REALISTIC_BUDGETS),
        help="comma-separated impression budgets in the realistic world",
    )
    ap.add_argument(
        "--bandit-batch",
        type=int,
        default=0,
        help="impressions per bandit round (0: the fine-tune's impressions per update)",
    )
    ap.add_argument("--tracking-uri", default=None, help="MLflow store (default: SQLite in a temp dir)")
    args = ap.parse_args()
    budgets = sorted(int(b) for b in args.budgets.split(","))
    realistic_budgets = sorted(int(b) for b in args.realistic_budgets.split(","))

    overrides = parse_overrides(args.set)

    t0 = time.perf_counter()
    w = build_world(args.seed, args.preset, overrides)
    tc = w.cfg.train
    print(
        f"set-up {time.perf_counter() - t0:.1f}s; reference graded={w.evaluator.reference_metrics['reward_graded']:.4f} "
        f"oracle graded={w.evaluator.oracle_metrics['reward_graded']:.4f}; kl_target={tc.kl_target}",
        flush=True,
    )
    rows, longest = run_budgets(w, large_world(w, args, overrides, "small"), budgets, args, "")
    table = budget_table(rows)
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))

    r_rows, r_longest, rw = {}, None, None
    if not args.no_realistic:  # the same protocol and settings where clicks are as rare as in public logs
        t0 = time.perf_counter()
        rw = build_world(args.seed, args.preset, overrides, "realistic")
        ref_m, orc_m = rw.evaluator.reference_metrics, rw.evaluator.oracle_metrics
        print(
            f"realistic set-up {time.perf_counter() - t0:.1f}s; reference graded={ref_m['reward_graded']:.4f} "
            f"ctr={ref_m['ctr']:.2%} oracle graded={orc_m['reward_graded']:.4f} ctr={orc_m['ctr']:.2%}",
            flush=True,
        )
        r_large = large_world(rw, args, overrides, "realistic")
        r_rows, r_longest = run_budgets(rw, r_large, realistic_budgets, args, "realistic ")
        print("realistic world:")
        print(budget_table(r_rows).to_string(float_format=lambda x: f"{x:.3f}"))

    half = half_gap(longest)
    uri = args.tracking_uri
    if uri is None:  # a store of its own that outlives the script, artifacts beside it (not in cwd)
        d = tempfile.mkdtemp(prefix="sample-eff-")
        uri = f"sqlite:///{d}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        mlflow.create_experiment("sample-efficiency", artifact_location=f"{d}/artifacts")
    tracking.setup(TrackingConfig(tracking_uri=uri, experiment="sample-efficiency"))
    with tracking.start_run(
        w.cfg, load_reward(w.cfg.reward).name, "simulator", f"sample-efficiency-seed{args.seed}"
    ) as run:
        log_budgets(rows, "")
        tracking.log_figure(curve_figure(table, longest), "sample_efficiency.png")
        tracking.log_table(table, "sample_efficiency")
        if rw is not None:
            log_budgets(r_rows, "realistic_")
            mlflow.log_metrics(
                {
                    "realistic_reference_ctr": rw.evaluator.reference_metrics["ctr"],
                    "realistic_oracle_ctr": rw.evaluator.oracle_metrics["ctr"],
                }
            )
            r_table = budget_table(r_rows)
            tracking.log_figure(
                curve_figure(r_table, r_longest, "realistic world"), "sample_efficiency_realistic.png"
            )
            tracking.log_table(r_table, "sample_efficiency_realistic")
    print(
        f"logged to MLflow at {uri} (experiment sample-efficiency, run {run.info.run_id}; "
        f"mlflow ui --backend-store-uri {uri})"
    )

    def gap(rs: dict[int, dict[str, float]], b: int) -> str:
        return f"{rs[b]['finetune']:.4f}" if b in rs else "nan"

    kl_1m = f"{rows[1_024_000]['kl']:.4f}" if 1_024_000 in rows else "nan"
    print(
        f"sample_efficiency: gap_10k={gap(rows, 10_240)} gap_50k={gap(rows, 51_200)} "
        f"gap_200k={gap(rows, 204_800)} gap_1m={gap(rows, 1_024_000)} kl_1m={kl_1m} "
        f"impressions_to_half_gap={'never' if half is None else half} "
        f"realistic_gap_200k={gap(r_rows, 204_800)} realistic_gap_1m={gap(r_rows, 1_024_000)}"
    )


if __name__ == "__main__":
    main()
