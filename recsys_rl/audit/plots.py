"""Figures of the audit: exposure Lorenz curves, and audit figures against loop rounds."""

from __future__ import annotations

import pandas as pd
import torch

from recsys_rl.audit.concentration import gini, lorenz


def lorenz_figure(exposures: dict[str, torch.Tensor]):
    """Lorenz curves of exposure (name -> (N,)): share of exposure held by the least-exposed products.
    The diagonal is equal exposure; the further below it, the more concentrated (Gini in the legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, exp in exposures.items():
        curve = lorenz(exp).numpy()
        x = torch.linspace(0, 1, len(curve)).numpy()
        ax.plot(x, curve, label=f"{name} (Gini {gini(exp):.3f})")
    ax.plot([0, 1], [0, 1], color="gray", ls=":", label="equal exposure")
    ax.set_xlabel("share of products, least exposed first")
    ax.set_ylabel("share of examination-weighted exposure")
    ax.set_title("exposure Lorenz curves")
    ax.legend()
    fig.tight_layout()
    return fig


def rounds_figure(history: pd.DataFrame, metrics: list[str], oracle: dict[str, float] | None = None):
    """One panel per metric against loop rounds (a line per variant column ``variant``), the oracle dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    for ax, m in zip(axes.flat, metrics, strict=False):
        for variant, df in history.groupby("variant", sort=False):
            ax.plot(df["round"], df[m], marker="o", label=str(variant))
        if oracle and m in oracle:
            ax.axhline(oracle[m], color="green", ls="--", label="oracle")
        ax.set_title(m)
        ax.set_xlabel("round")
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    axes.flat[0].legend()
    fig.tight_layout()
    return fig
