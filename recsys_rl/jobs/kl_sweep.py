"""Over-optimisation made visible: proxy (reward-model) and gold value against sqrt(KL) per KL budget.

For each KL budget the policy is fine-tuned against the reward model (``rm_finetune``, adaptive beta
aiming at the budget), and best-of-n is run with the n whose analytic KL is nearest the budget. Both are
valued by the reward model (proxy) and by a judge (gold: exact on a simulator, or doubly robust on
held-out logs). The functional forms of Gao, Schulman & Hilton (2022) are fitted to each curve, with
d = sqrt(KL) and R the gain over the reference:

    RL:          R(d) = d (alpha - beta ln d)     peak at d* = exp(alpha / beta - 1)
    best-of-n:   R(d) = d (alpha - beta d)        peak at d* = alpha / (2 beta)

Both are linear in (alpha, beta), so each fit is one least-squares solve. The recommended kl_target is
the budget whose RL policy has the highest measured gold value.

Budgets (``kl_targets``, ``widen_to``, the recommendation) are in the unit of ``train.kl_target``: nats
per displayed product. Measured KL (the table's ``kl``, sqrt(KL) on the plot, ``argmax_kl``) is per
banner, as the learner and best-of-n measure it; ``kl_per_slot`` is that divided by K.

The RL curve has a finite end: the reward model's argmax banner (exact, ``argmax_banners``) is the
solution for every budget at or above its KL to the reference, E[-log ref(argmax)] (``argmax_kl``; ~22
nats on the benchmark's world), so widening stops at the first budget past it, and that end is valued
and reported beside the budgets. A budget is only a budget if the optimiser can spend it: a run that
ends short of the controller's aim is continued (``reach_rounds``) from its policy and beta.

MLflow: one parent run (plot, table, recommendation) with one nested child run per budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import mlflow
import numpy as np
import pandas as pd
import torch

from recsys_rl import slate, tracking
from recsys_rl.config import RewardScheme, RunConfig, per_banner
from recsys_rl.finetune.reward_model import rm_finetune
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import ContextBatch
from recsys_rl.reward_model.best_of_n import best_of_n, best_of_n_kl, n_for_kl
from recsys_rl.reward_model.model import BannerRewardModel
from recsys_rl.reward_model.scoring import argmax_banners, banner_rewards, policy_value

EXPERIMENT = "recsys-rl-kl-sweep"
REACHED = 0.95  # a run "reached" its budget at this share of the adaptive controller's aim


@dataclass
class Fit:
    """R(d) = d (alpha - beta f(d)); f = ln for RL, identity for best-of-n. peak_kl = d*^2 (inf: none)."""

    form: str
    alpha: float
    beta: float
    peak_kl: float

    def __call__(self, d: np.ndarray) -> np.ndarray:
        f = np.log(np.maximum(d, 1e-12)) if self.form == "rl" else d
        return d * (self.alpha - self.beta * f)


def fit_form(form: str, d: np.ndarray, gain: np.ndarray) -> Fit:
    """Least-squares (alpha, beta) of the Gao-Schulman-Hilton form through points (d > 0, gain)."""
    keep = d > 0
    d, gain = d[keep], gain[keep]
    if len(d) < 2:
        return Fit(form, math.nan, math.nan, math.nan)
    f = np.log(d) if form == "rl" else d
    (alpha, beta), *_ = np.linalg.lstsq(np.stack([d, -d * f], 1), gain, rcond=None)
    if beta <= 0:
        peak = math.inf
    else:
        peak = math.exp(2 * (alpha / beta - 1)) if form == "rl" else (alpha / (2 * beta)) ** 2
    return Fit(form, float(alpha), float(beta), float(peak))


@dataclass
class SweepResult:
    table: pd.DataFrame  # one row per (method, budget): kl_target, n, rounds, kl, sqrt_kl, proxy, gold
    reference_proxy: float
    reference_gold: float
    gold_label: str
    fits: dict[str, Fit] = field(default_factory=dict)  # "rl_proxy", "rl_gold", "bon_proxy", "bon_gold"
    recommended_kl_target: float = math.nan
    summary: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    argmax_proxy: float = math.nan  # the reward model's argmax banner: the KL -> inf limit
    argmax_gold: float = math.nan
    argmax_kl: float = math.nan  # its KL to the reference: no budget above this binds


@torch.no_grad()
def policy_kl(policy: BannerPolicy, reference: BannerPolicy, ctx: ContextBatch, g: torch.Generator) -> float:
    """KL(pi || ref) per banner: exact per position along banners drawn from pi, averaged over contexts."""
    total = 0.0
    for s in range(0, len(ctx), 1024):
        c = ctx[s : s + 1024]
        lp, lq = policy.logits(c), reference.logits(c)
        total += float(slate.banner_terms(lp, lq, slate.gumbel_topk(lp, reference.banner_size, g))[1].sum())
    return total / len(ctx)


@torch.no_grad()
def argmax_kl(reference: BannerPolicy, top: torch.Tensor, ctx: ContextBatch) -> float:
    """KL(argmax || ref) = E_x[-log ref(top(x) | x)] of the deterministic banners top (C, K).

    The constrained optimum max E[proxy] s.t. KL <= t is the reward model's argmax banner for every
    t at or above this value (it is the unconstrained maximiser and fits the budget), so budgets
    beyond it all have the same solution: the end of the RL curve.
    """
    lq = [reference.logits(ctx[s : s + 1024]) for s in range(0, len(ctx), 1024)]
    return float(-slate.log_prob(torch.cat(lq), top).mean())


def past_peak(rl: pd.DataFrame, limit: tuple[float, float] | None = None) -> dict[str, float]:
    """Gold peak of the RL curve and what the largest budget does past it (proxy gain, gold loss).

    ``limit``: (proxy, gold) of the reward model's argmax banner, the curve's KL -> inf end; when
    given, the same two figures are also reported against it (``*_at_limit``).
    """
    peak = rl.loc[rl["gold"].idxmax()]
    last = rl.loc[rl["kl_target"].idxmax()]
    out = {
        "gold_peak_kl_target": float(peak["kl_target"]),
        "gold_peak_kl": float(peak["kl"]),
        "gold_peak_value": float(peak["gold"]),
        "proxy_gain_past_peak": float(last["proxy"] - peak["proxy"]),
        "gold_loss_past_peak": float(peak["gold"] - last["gold"]),
    }
    if limit is not None and all(math.isfinite(v) for v in limit):
        out["proxy_gain_past_peak_at_limit"] = float(limit[0] - peak["proxy"])
        out["gold_loss_past_peak_at_limit"] = float(peak["gold"] - limit[1])
    return out


def sweep_figure(res: SweepResult):
    """Proxy and gold value against sqrt(KL), RL and best-of-n, with the fitted forms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    t = res.table
    colours = {"rl": "tab:blue", "bon": "tab:orange"}
    names = {"rl": "RL (KL-PPO)", "bon": "best-of-n"}
    for method in ("rl", "bon"):
        rows = t[t["method"] == method].sort_values("sqrt_kl")
        if rows.empty:
            continue
        d = np.r_[0.0, rows["sqrt_kl"].to_numpy()]
        grid = np.linspace(1e-3, d.max() * 1.05, 200)
        for value, ref, ls, marker in (
            ("proxy", res.reference_proxy, "--", "o"),
            ("gold", res.reference_gold, "-", "s"),
        ):
            y = np.r_[ref, rows[value].to_numpy()]
            if np.isnan(y).all():
                continue
            label = f"{names[method]}: {'proxy (reward model)' if value == 'proxy' else res.gold_label}"
            ax.plot(d, y, marker, color=colours[method], alpha=0.9 if value == "gold" else 0.5, label=label)
            f = res.fits.get(f"{method}_{value}")
            if f is not None and math.isfinite(f.alpha):
                ax.plot(grid, ref + f(grid), ls, color=colours[method], alpha=0.9 if value == "gold" else 0.5)
    d_end = math.sqrt(res.argmax_kl) if math.isfinite(res.argmax_kl) else None
    ax.axhline(
        res.argmax_proxy, color="gray", ls="--", lw=1, label="reward model's argmax banner: proxy (KL→∞)"
    )
    if d_end is not None:
        ax.plot([d_end], [res.argmax_proxy], "D", color="gray", alpha=0.5)
    if math.isfinite(res.argmax_gold):
        ax.axhline(
            res.argmax_gold, color="gray", ls="-", lw=1, label="reward model's argmax banner: gold (KL→∞)"
        )
        if d_end is not None:
            ax.plot([d_end], [res.argmax_gold], "D", color="gray")
    if math.isfinite(res.recommended_kl_target):
        peak = res.summary.get("gold_peak_kl", math.nan)
        ax.axvline(
            math.sqrt(peak),
            color="green",
            ls=":",
            label=f"gold peak: kl_target={res.recommended_kl_target:g}",
        )
    ax.set_xlabel("sqrt(KL(π ‖ reference))  (nats per banner)")
    ax.set_ylabel("expected reward per impression")
    ax.set_title("over-optimisation of a learned reward (Gao, Schulman & Hilton forms fitted)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def kl_sweep(
    reference: BannerPolicy,
    model: BannerRewardModel,
    train_contexts: ContextBatch,
    scheme: RewardScheme,
    cfg: RunConfig,
    kl_targets: list[float],
    judge,
    *,
    bon_max_n: int = 4096,
    widen_to: float | None = None,
    reach_rounds: int = 1,
    experiment: str = EXPERIMENT,
    evaluator=None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> SweepResult:
    """Fine-tune per budget, run best-of-n, value both twice (proxy, gold), fit, plot, log to MLflow.

    ``judge``: ``ExactJudge`` or ``DoublyRobustJudge`` (its contexts are where proxy and gold are
    measured). ``widen_to``: while the RL gold still peaks at the largest budget, double it (up to this).
    ``reach_rounds``: a budget whose run ends with its KL short of the controller's aim (the optimiser
    ran out of updates before the penalty bound) is continued, up to this many runs of
    ``cfg.train.total_impressions`` in all, so that a large ``kl_target`` is a budget actually spent.
    The reward model's own argmax banner (the limit of optimising it, KL -> inf) is valued too, and
    its KL to the reference caps the widening: no budget above it binds (see ``argmax_kl``).
    ``evaluator``: an ``Evaluator`` on the same env, for the greedy oracle_gap_closed.
    """
    if not kl_targets or any(not t > 0 for t in kl_targets):
        raise ValueError(f"--kl-targets: need positive budgets, got {kl_targets}")
    seed = cfg.seed
    ctx = judge.contexts
    g = torch.Generator().manual_seed(seed + 5)
    ref_proxy = policy_value(model, scheme, reference.logits, ctx, g)
    ref_gold = judge.policy(reference.logits, torch.Generator().manual_seed(seed + 6))
    top = argmax_banners(model, scheme, ctx)
    argmax_proxy = float(banner_rewards(model, scheme, ctx, top).mean())
    argmax_gold = judge.banners(top)
    end_kl = argmax_kl(reference, top, ctx)
    k = reference.banner_size
    tracking.setup(cfg.tracking, experiment)
    rows = []
    with mlflow.start_run(run_name=f"kl-sweep-{scheme.name}") as parent:
        mlflow.set_tags({"job": "kl_sweep", "reward_scheme": scheme.name, "gold_estimator": judge.label})
        mlflow.log_params(
            {
                "kl_targets": ",".join(f"{t:g}" for t in kl_targets),
                "reward": scheme.name,
                "seed": seed,
                "bon_max_n": bon_max_n,
                "reach_rounds": reach_rounds,
                "train_total_impressions": cfg.train.total_impressions,
            }
        )
        mlflow.log_metrics(
            {
                "reference_proxy": ref_proxy,
                "reference_gold": ref_gold,
                "argmax_proxy": argmax_proxy,
                "argmax_kl": end_kl,
            }
            | ({"argmax_gold": argmax_gold} if math.isfinite(argmax_gold) else {})
        )
        budgets, done = sorted(kl_targets), 0
        while done < len(budgets):
            t = budgets[done]
            done += 1
            train_cfg = cfg.train.model_copy(update={"kl_target": t})
            with mlflow.start_run(run_name=f"kl_target={t:g}", nested=True):
                mlflow.set_tags({"job": "kl_sweep_budget", "reward_scheme": scheme.name})
                mlflow.log_params({"kl_target": t, "reward": scheme.name, "seed": seed})
                policy, hist = rm_finetune(
                    reference, model, train_contexts, scheme, train_cfg, seed, progress=progress
                )
                rounds = 1
                aim = REACHED * (1 - train_cfg.kl_margin) * per_banner(t, k)
                while rounds < reach_rounds and hist[-1]["kl"] < aim:
                    # the budget is not binding yet: the run ended short of it (the optimiser, not the
                    # KL penalty, stopped it); continue from where it stopped, with its beta
                    log(
                        f"kl_target={t:g}: KL {hist[-1]['kl']:.2f} after {rounds} run(s), short of "
                        f"{aim:.2f}: continuing"
                    )
                    policy, more = rm_finetune(
                        reference,
                        model,
                        train_contexts,
                        scheme,
                        train_cfg,
                        seed + 100 * rounds,
                        progress=progress,
                        start=policy,
                        beta=hist[-1]["beta"],
                    )
                    hist += more
                    rounds += 1
                for i, h in enumerate(hist[:: max(1, len(hist) // 100)]):
                    mlflow.log_metrics({f"train_{k}": v for k, v in h.items()}, step=i)
                gk = torch.Generator().manual_seed(seed + 7)
                rl = {
                    "method": "rl",
                    "kl_target": t,
                    "n": math.nan,
                    "rounds": rounds,
                    "kl": policy_kl(policy, reference, ctx, gk),  # per banner
                    "proxy": policy_value(
                        model, scheme, policy.logits, ctx, torch.Generator().manual_seed(seed + 5)
                    ),
                    "gold": judge.policy(policy.logits, torch.Generator().manual_seed(seed + 6)),
                }
                if evaluator is not None:
                    rl["oracle_gap_closed"] = evaluator(policy)["oracle_gap_closed"]
                rows.append(rl)
                metrics = {
                    f"rl_{k}": float(v) for k, v in rl.items() if k not in ("method", "n", "kl_target")
                }
                n = n_for_kl(per_banner(t, k))
                if n <= bon_max_n:
                    items, scores = best_of_n(
                        reference.logits, model, scheme, ctx, n, torch.Generator().manual_seed(seed + 8)
                    )
                    bon = {
                        "method": "bon",
                        "kl_target": t,
                        "n": n,
                        "kl": best_of_n_kl(n),
                        "proxy": float(scores.mean()),
                        "gold": judge.banners(items),
                    }
                    rows.append(bon)
                    metrics.update(
                        {f"bon_{k}": float(v) for k, v in bon.items() if k not in ("method", "kl_target")}
                    )
                mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
                log(
                    f"kl_target={t:g}: RL kl={rl['kl']:.3f} proxy={rl['proxy']:.4f} gold={rl['gold']:.4f}"
                    + (
                        f" | best-of-{n}: kl={bon['kl']:.3f} proxy={bon['proxy']:.4f} gold={bon['gold']:.4f}"
                        if n <= bon_max_n
                        else f" | best-of-{n} over --bon-max-n {bon_max_n}: skipped"
                    )
                )
            if done == len(budgets) and widen_to and 2 * t <= widen_to:
                golds = [r["gold"] for r in rows if r["method"] == "rl"]
                if golds and max(golds) == golds[-1]:  # the gold still rises at the largest budget
                    if per_banner(t, k) >= end_kl:
                        log(
                            f"no gold peak up to kl_target={t:g}, which is already above the KL of the "
                            f"reward model's argmax ({end_kl / k:.2f} per product): no larger budget binds, "
                            "not widening"
                        )
                    else:
                        log(f"no gold peak up to kl_target={t:g}: widening the sweep to {2 * t:g}")
                        budgets.append(2 * t)
        table = pd.DataFrame(rows)
        table["sqrt_kl"] = np.sqrt(table["kl"].clip(lower=0))
        table["kl_per_slot"] = table["kl"] / k
        res = SweepResult(
            table,
            ref_proxy,
            ref_gold,
            judge.label,
            argmax_proxy=argmax_proxy,
            argmax_gold=argmax_gold,
            argmax_kl=end_kl,
        )
        for method in ("rl", "bon"):
            part = table[table["method"] == method]
            for value, ref in (("proxy", ref_proxy), ("gold", ref_gold)):
                if len(part) and part[value].notna().all():
                    res.fits[f"{method}_{value}"] = fit_form(
                        method, part["sqrt_kl"].to_numpy(), part[value].to_numpy() - ref
                    )
        rl_rows = table[table["method"] == "rl"].reset_index(drop=True)
        if rl_rows["gold"].notna().any():
            res.summary = past_peak(rl_rows, (argmax_proxy, argmax_gold))
            res.recommended_kl_target = res.summary["gold_peak_kl_target"]
        for name, f in res.fits.items():
            res.summary.update(
                {f"fit_{name}_alpha": f.alpha, f"fit_{name}_beta": f.beta, f"fit_{name}_peak_kl": f.peak_kl}
            )
        mlflow.log_metrics(
            {
                k: v
                for k, v in {**res.summary, "recommended_kl_target": res.recommended_kl_target}.items()
                if math.isfinite(v)
            }
        )
        mlflow.set_tag("recommended_kl_target", f"{res.recommended_kl_target:g}")
        tracking.log_table(table.set_index(["method", "kl_target"]), "kl_sweep")
        tracking.log_figure(sweep_figure(res), "overoptimisation.png")
        res.run_id = parent.info.run_id
    return res
