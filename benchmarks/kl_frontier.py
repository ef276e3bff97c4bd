"""The KL frontier: how much of the reference->oracle gap a policy *could* close at each KL budget.

A learner is judged by two numbers, gap closed and KL(pi || ref); this script draws the line it is
measured against. With the true per-product reward known (the simulator's
``reward_given_examination`` g(u, j), the oracle's own sort key), the reference is tilted,
logits_ref + lambda * g, for a range of lambda: at each one the greedy banners' gap closed and the
exact per-banner KL of the tilted Plackett–Luce policy to the reference (``slate.banner_terms`` on
banners drawn from it: the evaluator's own definition). The tilt is the form the KL-regularised
optimum takes (pi* ~ pi_ref exp(r / beta)) applied per product, so every point on the curve is a
policy of the learner's own class that reaches that gap at that KL (the exact banner-level optimum
can only do better).

The true g(u, j) depends on the user's latent taste, which no policy sees: it maps the *context* to a
banner. So a second curve tilts by the best a context-only scorer can know, the posterior expectation
E[g(u, j) | x] over the population given the context (``simulator.posterior``: exact, from the
simulator's own context likelihood). That curve is the ceiling of a learner of this class: the distance
from a learner's (KL, gap) point up to it is what its estimates of the reward cost it; the distance
between the two curves is what the context does not reveal, which no amount of traffic buys.

The set-up of ``benchmarks/sample_efficiency.py`` (small catalogue, ``graded``, the reference trained
on 100k popularity-logged impressions, the fixed evaluation users). Prints the curve, logs it as a
plot and a table to MLflow (a SQLite store in a new temporary directory unless ``--tracking-uri``),
and ends with

kl_frontier: kl_at_gap_0.7=<x> kl_at_gap_0.8=<x> gap_at_kl_target=<x> kl_target=<x> context_kl_at_gap_0.8=<x> context_gap_at_kl_target=<x>

(KL read off the curve by linear interpolation in lambda; ``context_`` figures from the E[g | x] curve).

    python benchmarks/kl_frontier.py [--seed 0] [--preset configs/train/fast.yaml]
        [--learner 1024000:2.86:0.706 ...]   # impressions:KL:gap points to draw beside the curve
"""

from __future__ import annotations

import argparse
import tempfile

import mlflow
import numpy as np
import pandas as pd
import torch
from sample_efficiency import build_world, parse_overrides

from recsys_rl import slate, tracking
from recsys_rl.config import TrackingConfig, load_reward, per_banner
from simulator.posterior import posterior_reward
from simulator.response import reward_given_examination

LAMBDAS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 8.0)


def tilt_reward(w, which: str = "true") -> torch.Tensor:
    """(E, N) per-product reward given examination for the evaluation users: ``true`` g(u, j) of the
    user behind each context, or ``context`` E[g(u, j) | x], all a context-only policy could know."""
    ev, scheme = w.evaluator, load_reward(w.cfg.reward)
    with torch.no_grad():
        if which == "true":
            return reward_given_examination(w.sim.catalogue_rates(ev.eval_set.users), scheme)
        if which == "context":
            return posterior_reward(w.sim, ev.eval_set.contexts, scheme)
    raise ValueError(f"tilt_reward: which must be 'true' or 'context', got {which!r}")


def frontier(w, lambdas=LAMBDAS, which: str = "true") -> pd.DataFrame:
    """One row per lambda: gap closed by the tilted policy's greedy banners and its KL to the reference."""
    ev, scheme = w.evaluator, load_reward(w.cfg.reward)
    g = tilt_reward(w, which)  # (E, N)
    with torch.no_grad():
        ref = w.reference.logits(ev.eval_set.contexts)  # (E, N)
    k, rows = ev.k, []
    for lam in lambdas:
        tilted = ref + lam * g
        value = ev.score_banners(slate.greedy(tilted, k))[f"reward_{scheme.name}"]
        banners = slate.gumbel_topk(tilted, k, torch.Generator().manual_seed(ev.seed + 1))
        _, kl, _ = slate.banner_terms(tilted, ref, banners)
        rows.append({"lambda": lam, "gap_closed": ev.gap_closed(value), "kl": kl.mean().item()})
    return pd.DataFrame(rows).set_index("lambda")


def kl_at_gap(curve: pd.DataFrame, gap: float) -> float:
    """Smallest KL on the curve at which the gap closed reaches ``gap`` (interpolated); nan if never."""
    g, kl = curve["gap_closed"].to_numpy(), curve["kl"].to_numpy()
    above = np.nonzero(g >= gap)[0]
    if not len(above):
        return float("nan")
    i = above[0]
    if i == 0:
        return float(kl[0])
    t = (gap - g[i - 1]) / (g[i] - g[i - 1])
    return float(kl[i - 1] + t * (kl[i] - kl[i - 1]))


def gap_at_kl(curve: pd.DataFrame, budget: float) -> float:
    g, kl = curve["gap_closed"].to_numpy(), curve["kl"].to_numpy()
    return float(np.interp(budget, kl, g))


def figure(
    curve: pd.DataFrame, context: pd.DataFrame, learner: list[tuple[int, float, float]], kl_target: float
):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(curve["kl"], curve["gap_closed"], "o-", label="reference tilted by the true reward g(u, j)")
    ax.plot(
        context["kl"], context["gap_closed"], "o-", label="tilted by E[g | context] (context-only ceiling)"
    )
    for n, kl, gap in learner:
        ax.plot([kl], [gap], "s", label=f"learner after {n:,d} impressions")
    ax.axvline(kl_target, color="gray", ls=":", lw=0.8, label=f"K x train.kl_target = {kl_target:g}")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("KL(policy || reference) per banner, nats")
    ax.set_ylabel("fraction of reference→oracle gap closed")
    ax.set_title("what each KL budget could buy (small catalogue, graded)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def parse_learner(points: list[str]) -> list[tuple[int, float, float]]:
    out = []
    for p in points:
        try:
            n, kl, gap = p.split(":")
            out.append((int(n), float(kl), float(gap)))
        except ValueError:
            raise SystemExit(f"--learner: expected impressions:KL:gap, got {p!r}") from None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default=None, help="run config YAML (the world and kl_target come from it)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--learner", nargs="*", default=[], metavar="N:KL:GAP", help="learner points to plot")
    ap.add_argument("--tracking-uri", default=None, help="MLflow store (default: SQLite in a temp dir)")
    args = ap.parse_args()
    learner = parse_learner(args.learner)

    w = build_world(args.seed, args.preset, parse_overrides(args.set))
    curve, context = frontier(w), frontier(w, which="context")
    print("tilted by the true reward g(u, j):")
    print(curve.to_string(float_format=lambda x: f"{x:.3f}"))
    print("tilted by E[g | context] (the context-only ceiling):")
    print(context.to_string(float_format=lambda x: f"{x:.3f}"))
    kl_target = w.cfg.train.kl_target  # nats per displayed product
    budget = per_banner(kl_target, w.cfg.sim.banner_size)  # the frontier's KL is per banner
    for n, kl, gap in learner:
        print(
            f"learner at {n:,d} impressions: gap {gap:.3f} at KL {kl:.2f}; the frontier reaches "
            f"{gap:.3f} at KL {kl_at_gap(curve, gap):.2f} and gives {gap_at_kl(curve, kl):.3f} at KL {kl:.2f}; "
            f"the context-only one reaches it at KL {kl_at_gap(context, gap):.2f} and gives "
            f"{gap_at_kl(context, kl):.3f}"
        )

    uri = args.tracking_uri
    if uri is None:
        d = tempfile.mkdtemp(prefix="kl-frontier-")
        uri = f"sqlite:///{d}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        mlflow.create_experiment("kl-frontier", artifact_location=f"{d}/artifacts")
    tracking.setup(TrackingConfig(tracking_uri=uri, experiment="kl-frontier"))
    with tracking.start_run(
        w.cfg, load_reward(w.cfg.reward).name, "simulator", f"kl-frontier-seed{args.seed}"
    ) as run:
        for (lam, row), (_, crow) in zip(curve.iterrows(), context.iterrows(), strict=True):
            mlflow.log_metrics(
                {
                    "frontier_gap": row["gap_closed"],
                    "frontier_kl": row["kl"],
                    "context_frontier_gap": crow["gap_closed"],
                    "context_frontier_kl": crow["kl"],
                },
                step=int(lam * 1000),
            )
        tracking.log_figure(figure(curve, context, learner, budget), "kl_frontier.png")
        tracking.log_table(curve, "kl_frontier")
        tracking.log_table(context, "kl_frontier_context")
    print(f"logged to MLflow at {uri} (experiment kl-frontier, run {run.info.run_id})")
    print(
        f"kl_frontier: kl_at_gap_0.7={kl_at_gap(curve, 0.7):.3f} kl_at_gap_0.8={kl_at_gap(curve, 0.8):.3f} "
        f"gap_at_kl_target={gap_at_kl(curve, budget):.4f} kl_target={kl_target:g} "
        f"context_kl_at_gap_0.8={kl_at_gap(context, 0.8):.3f} "
        f"context_gap_at_kl_target={gap_at_kl(context, budget):.4f}"
    )


if __name__ == "__main__":
    main()
