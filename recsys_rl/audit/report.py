"""The audit of one policy's served banners: every figure as a flat metrics dict, plus the exposure vector.

Inputs are the banners as served (S sampled per context for a stochastic policy, the one banner of a
deterministic one such as the oracle), the row of each banner's context, and what the world says about
examination, popularity and categories.
"""

from __future__ import annotations

import torch

from recsys_rl.audit import calibration, concentration, homogenisation, merit, popularity
from recsys_rl.audit.exposure import banner_exposure
from recsys_rl.audit.world import AuditWorld
from recsys_rl.records import ContextBatch

AUDIT_METRICS = (
    "exposure_gini",
    "exposure_coverage",
    "tail_share",
    "avg_popularity",
    "popularity_lift",
    "calibration_kl",
    "exposure_per_merit_head",
    "exposure_per_merit_tail",
    "jaccard",
)


def audit_banners(
    world: AuditWorld,
    contexts: ContextBatch,
    rows: torch.Tensor,
    banners: torch.Tensor,
    value_given_examined: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[dict[str, float], torch.Tensor]:
    """(metrics, exposure (N,)) of banners (B', K) served to contexts[rows] (rows: (B',) long).

    value_given_examined: (B', K) each shown product's expected reward given it is examined (the merit
    figures are left out without it)."""
    exp = banner_exposure(banners, world.examination, world.n_products)
    head = world.head
    history = contexts.history[rows]
    m = {
        "exposure_gini": concentration.gini(exp),
        "exposure_coverage": concentration.coverage(exp),
        "tail_share": concentration.tail_share(exp, head),
        "avg_popularity": float(popularity.average_popularity(banners, world.popularity).mean()),
        "popularity_lift": popularity.popularity_lift(banners, history, world.popularity),
    }
    if world.categories is not None:
        m["calibration_kl"] = calibration.mean_calibration_kl(
            banners, history, world.categories, world.examination
        )
    if value_given_examined is not None:
        mer = merit.merit(banners, value_given_examined, world.n_products)
        m["exposure_per_merit_head"] = merit.exposure_per_merit(exp, mer, head)
        m["exposure_per_merit_tail"] = merit.exposure_per_merit(exp, mer, ~head)
    first = torch.ones(len(rows), dtype=torch.bool)  # one banner per context: between users, not samples
    first[_repeats(rows)] = False
    m["jaccard"] = homogenisation.mean_jaccard(banners[first], generator)
    return m, exp


def _repeats(rows: torch.Tensor) -> torch.Tensor:
    """Indices of the second and later banners of each context row."""
    order = torch.argsort(rows, stable=True)
    s = rows[order]
    later = torch.zeros(len(rows), dtype=torch.bool)
    later[1:] = s[1:] == s[:-1]
    return order[later]
