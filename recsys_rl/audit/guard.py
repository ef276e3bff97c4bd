"""The exposure guard rail: refuse a version that concentrates exposure more than allowed.

On the live path there is no simulator: both versions' served exposure is estimated on the recent
logged contexts (``samples`` Plackett-Luce banners each), examination from the given curve, the head
= the top share of products by purchases in those contexts' histories.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys_rl.audit.concentration import gini, tail_share
from recsys_rl.audit.exposure import policy_exposure
from recsys_rl.records import PAD, ContextBatch

SAMPLES = 4


def purchase_head(contexts: ContextBatch, n_products: int, head_share: float = 0.2) -> torch.Tensor:
    """(N,) bool: the top ``head_share`` of products by purchases in the contexts' histories."""
    h = contexts.history[contexts.history != PAD]
    counts = torch.bincount(h, minlength=n_products).float()
    mask = torch.zeros(n_products, dtype=torch.bool)
    mask[counts.topk(max(1, round(head_share * n_products))).indices] = True
    return mask


@dataclass
class ExposureGuard:
    """max_gini_rise: refuse when the candidate's exposure Gini exceeds the current version's by more;
    max_tail_drop: refuse when its long-tail share falls below the current's by more (None: unchecked)."""

    examination: torch.Tensor  # (K,)
    max_gini_rise: float | None = None
    max_tail_drop: float | None = None

    def check(
        self, candidate, current, contexts: ContextBatch, seed: int = 0
    ) -> tuple[dict[str, float], list[str]]:
        """(figures, reasons to refuse) of a candidate against the current version on recent contexts."""
        head = purchase_head(contexts, candidate.n_products)
        exp = {
            name: policy_exposure(p, contexts, self.examination, SAMPLES, torch.Generator().manual_seed(seed))
            for name, p in (("candidate", candidate), ("current", current))
        }
        fig = {
            "guard_gini": gini(exp["candidate"]),
            "guard_current_gini": gini(exp["current"]),
            "guard_tail_share": tail_share(exp["candidate"], head),
            "guard_current_tail_share": tail_share(exp["current"], head),
        }
        reasons = []
        rise = fig["guard_gini"] - fig["guard_current_gini"]
        if self.max_gini_rise is not None and rise > self.max_gini_rise:
            reasons.append(
                f"exposure Gini {fig['guard_gini']:.3f} above current {fig['guard_current_gini']:.3f} "
                f"by {rise:.3f} (limit {self.max_gini_rise})"
            )
        drop = fig["guard_current_tail_share"] - fig["guard_tail_share"]
        if self.max_tail_drop is not None and drop > self.max_tail_drop:
            reasons.append(
                f"long-tail share {fig['guard_tail_share']:.3f} below current "
                f"{fig['guard_current_tail_share']:.3f} by {drop:.3f} (limit {self.max_tail_drop})"
            )
        return fig, reasons
