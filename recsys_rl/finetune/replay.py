"""Off-policy replay of recent impressions: each update also trains on the last few batches again.

At small budgets every impression is precious: a batch trained on once and thrown away leaves most of
its information unused. Replayed banners keep the log-propensity logged when they were *served*
(``BannerBatch.log_prob``), so the learner's ratio exp(log pi_now(b) - log mu_served(b)) re-weights
them to the current policy (importance sampling) and the PPO clip bounds how far one stale banner can
push it. Nothing here recomputes a propensity: that is what keeps replay off-policy-correct.

Shapes: a batch is C contexts x G banners per context (rows of one context consecutive), with the
(C, M) candidate ids they were drawn from on the large-catalogue path (None on the full path).
"""

from __future__ import annotations

from collections import deque

import torch

from recsys_rl.records import BannerBatch, ContextBatch, LoggedBatch, OutcomeBatch


def concat(batches: list[LoggedBatch]) -> LoggedBatch:
    """Row-wise concatenation of logged batches (all fields kept, logged propensities included)."""
    ctx = [b.contexts for b in batches]
    uf = None if any(c.user_features is None for c in ctx) else torch.cat([c.user_features for c in ctx])
    return LoggedBatch(
        ContextBatch(torch.cat([c.viewed for c in ctx]), torch.cat([c.history for c in ctx]), uf),
        BannerBatch(
            torch.cat([b.banners.items for b in batches]), torch.cat([b.banners.log_prob for b in batches])
        ),
        OutcomeBatch(
            *(torch.cat([getattr(b.outcomes, f) for b in batches]) for f in ("clicks", "units", "revenue"))
        ),
    )


class ReplayBuffer:
    """The last ``capacity`` batches (FIFO); ``with_replay`` returns a new batch plus the stored ones."""

    def __init__(self, capacity: int):
        if capacity < 0:
            raise ValueError(f"replay capacity: must be >= 0, got {capacity}")
        self.capacity = capacity
        self._items: deque[tuple[LoggedBatch, torch.Tensor | None]] = deque(maxlen=max(capacity, 1))

    def __len__(self) -> int:
        return len(self._items) if self.capacity else 0

    def with_replay(
        self, batch: LoggedBatch, candidates: torch.Tensor | None
    ) -> tuple[LoggedBatch, torch.Tensor | None]:
        """(new batch followed by the stored batches, their candidates likewise); then store the new one.

        Group structure is kept: each stored batch has the same banners per context as when served.
        """
        old = list(self._items) if self.capacity else []
        if self.capacity:
            self._items.append((batch, candidates))
        if not old:
            return batch, candidates
        batches = [batch, *(b for b, _ in old)]
        cands = None if candidates is None else torch.cat([candidates, *(c for _, c in old)])
        return concat(batches), cands
