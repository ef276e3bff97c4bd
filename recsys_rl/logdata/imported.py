"""The result of importing a log: a validated ``LoggedBatch`` and what the log does and does not record.

Consumers (baseline training, fine-tuning from logs, OPE, the reward model) ask it which outcomes
exist, whether whole-banner propensities do, and whether rows are banners or single displayed items,
instead of guessing from the tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recsys_rl.config import RewardScheme
from recsys_rl.records import BANNER_SIZE, ContextBatch, LoggedBatch


@dataclass(frozen=True)
class ImportedLogs:
    """A validated log. behaviour_marginals: (n, K) P_mu(logged product at its position | x) when the
    layout logs them, else None. Without a banner propensity, batch.banners.log_prob is NaN.
    outcomes: which of 'clicks', 'units', 'revenue' the log records (the others are zeros).

    Slot rows that cannot be regrouped into banners (slot layout, no impression key): ``positions``
    (n,) is each row's banner position, the batch holds one product per row (items (n, 1)), and
    ``banner_size`` is the K of the banners they came from. Such rows feed position-wise estimators and
    item-level training, never whole-banner weights."""

    batch: LoggedBatch
    behaviour_marginals: np.ndarray | None
    has_banner_propensity: bool
    outcomes: frozenset[str]
    source: str
    positions: np.ndarray | None = None
    banner_size: int = BANNER_SIZE
    categories: np.ndarray | None = None  # (n, C) raw categorical values (str), one row per batch row
    first_rows: np.ndarray | None = None  # regrouped slot rows: (B,) the table row of each banner's context
    vocabulary: list[list[str]] | None = None  # of the categorical codes in batch.contexts (this log's own)

    def contexts_for(self, vocabulary) -> ContextBatch:
        """The batch's contexts with categorical features encoded under a model's ``vocabulary``."""
        from recsys_rl.features import encode

        ctx = self.batch.contexts
        if self.categories is None or not vocabulary:
            return ctx
        codes = torch.from_numpy(encode(self.categories, vocabulary))
        return ContextBatch(ctx.viewed, ctx.history, ctx.user_features, codes)

    def for_model(self, vocabulary) -> LoggedBatch:
        """The batch with its contexts encoded for a model (see ``contexts_for``)."""
        return LoggedBatch(self.contexts_for(vocabulary), self.batch.banners, self.batch.outcomes)

    @property
    def slot_rows(self) -> bool:
        """True when rows are single displayed items, not banners."""
        return self.positions is not None

    def __len__(self) -> int:
        return len(self.batch)

    def unobserved(self, scheme: RewardScheme) -> list[str]:
        """Outcomes the scheme rewards that this log does not record (its reward would be wrong)."""
        needs = {
            "click": "clicks",
            "purchase": "units",
            "multi_purchase": "units",
            "units": "units",
            "revenue": "revenue",
        }
        return sorted({needs[k] for k in needs if getattr(scheme, k) and needs[k] not in self.outcomes})
