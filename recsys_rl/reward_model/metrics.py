"""Held-out quality of the reward model per outcome: log-loss, AUC, calibration (ECE and reliability).

Outcomes, each a binary event scored on the rows where it can happen:
- click: every shown (impression, position), P = exam[k] * sigmoid(rel);
- purchase: every click, P(purchase | click);
- multi: every purchase, P(units >= 2 | purchase) = 1 - exp(-lam) (the expected-units head).
ECE = sum_b (n_b / n) |mean prediction_b - mean outcome_b| over equal-width probability bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import log_loss, roc_auc_score

from recsys_rl.records import LoggedBatch
from recsys_rl.reward_model.model import BannerRewardModel

OUTCOMES = ("click", "purchase", "multi")


@dataclass
class Reliability:
    """Per-bin mean prediction, observed rate and count (bins with no rows are NaN / 0)."""

    predicted: np.ndarray
    observed: np.ndarray
    count: np.ndarray


@torch.no_grad()
def predictions(model: BannerRewardModel, batch: LoggedBatch, chunk: int = 8192) -> dict[str, tuple]:
    """outcome -> (predicted probability (m,), observed 0/1 (m,)) on the rows where it can happen."""
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {k: [] for k in OUTCOMES}
    for s in range(0, len(batch), chunk):
        b = batch[s : s + chunk]
        rel, buy, ext = model.head_logits(b.contexts, b.banners.items)
        o = b.outcomes
        p_click = model.exam_at(b.banners.items, b.banners.positions) * torch.sigmoid(rel)
        clicked, bought = o.clicks > 0, o.units > 0
        parts["click"].append((p_click.reshape(-1).numpy(), o.clicks.reshape(-1).numpy()))
        parts["purchase"].append((torch.sigmoid(buy[clicked]).numpy(), o.purchases[clicked].numpy()))
        lam = ext[bought].clamp(max=4.0).exp()
        parts["multi"].append((-torch.expm1(-lam).numpy(), o.multi[bought].numpy()))
    return {
        k: (np.concatenate([p for p, _ in v]), np.concatenate([y for _, y in v])) for k, v in parts.items()
    }


def reliability(p: np.ndarray, y: np.ndarray, bins: int) -> Reliability:
    idx = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        pred = np.bincount(idx, weights=p, minlength=bins) / count
        obs = np.bincount(idx, weights=y, minlength=bins) / count
    return Reliability(pred, obs, count)


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int) -> float:
    r = reliability(p, y, bins)
    keep = r.count > 0
    return float((r.count[keep] * np.abs(r.predicted[keep] - r.observed[keep])).sum() / max(len(p), 1))


def outcome_metrics(p: np.ndarray, y: np.ndarray, bins: int) -> dict[str, float]:
    """log_loss, auc, ece, n, base_rate for one outcome (AUC/log-loss NaN when only one class occurs)."""
    two_classes = len(np.unique(y)) == 2
    pc = np.clip(p, 1e-7, 1 - 1e-7)
    return {
        "log_loss": float(log_loss(y, pc, labels=[0, 1])) if len(y) else float("nan"),
        "auc": float(roc_auc_score(y, p)) if two_classes else float("nan"),
        "ece": expected_calibration_error(p, y, bins) if len(y) else float("nan"),
        "n": float(len(y)),
        "base_rate": float(y.mean()) if len(y) else float("nan"),
    }


def evaluate(model: BannerRewardModel, batch: LoggedBatch, bins: int = 10):
    """({'<outcome>_<metric>': value}, {outcome: Reliability}) on held-out ``batch``."""
    preds = predictions(model, batch)
    flat, curves = {}, {}
    for name, (p, y) in preds.items():
        for k, v in outcome_metrics(p, y, bins).items():
            flat[f"{k}_{name}"] = v
        curves[name] = reliability(p, y, bins)
    return flat, curves


def reliability_figure(curves: dict[str, Reliability], metrics: dict[str, float]):
    """One panel per outcome: observed rate against mean prediction per bin, with the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 4))
    for ax, (name, r) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        keep = r.count > 0
        top = max(float(np.nanmax(np.r_[r.predicted[keep], r.observed[keep], 0.05])), 0.05)
        ax.plot([0, top], [0, top], color="gray", ls="--", lw=1, label="perfect calibration")
        ax.plot(r.predicted[keep], r.observed[keep], "o-", label="held-out bins")
        ax.set_title(
            f"{name}: AUC {metrics.get(f'auc_{name}', float('nan')):.3f}, "
            f"ECE {metrics.get(f'ece_{name}', float('nan')):.4f}",
            fontsize=10,
        )
        ax.set_xlabel("predicted probability")
        ax.set_ylabel("observed rate")
        ax.legend(fontsize=8)
    fig.suptitle("reward model reliability on held-out impressions")
    fig.tight_layout()
    return fig
