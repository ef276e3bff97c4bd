"""What the audit needs to know about the shop, handed in by whoever knows it (the CLI wires the simulator's).

The engine never imports the simulator, so the examination curve, product popularity and categories
arrive as plain tensors: exact on the simulator, fitted (e.g. a reward model's examination curve) on logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class AuditWorld:
    """examination: (K,) probability each banner position is looked at; popularity: (N,) non-negative
    popularity of each product (the top ``head_share`` of products by it are the head); categories: (N,)
    long category of each product, or None (no calibration figure); user_groups: name -> (U,) bool per
    user id of the population (e.g. ``price_sensitive``), split into "<name>" and "not_<name>" segments."""

    examination: torch.Tensor
    popularity: torch.Tensor
    categories: torch.Tensor | None = None
    user_groups: dict[str, torch.Tensor] = field(default_factory=dict)
    head_share: float = 0.2

    def __post_init__(self) -> None:
        if self.examination.dim() != 1 or len(self.examination) == 0:
            raise ValueError(f"examination: expected a (K,) curve, got shape {tuple(self.examination.shape)}")
        if (self.examination < 0).any() or (self.examination > 1).any():
            raise ValueError("examination: probabilities must lie in [0, 1]")
        if self.popularity.dim() != 1 or (self.popularity < 0).any():
            raise ValueError("popularity: expected a (N,) non-negative vector")
        if self.categories is not None and self.categories.shape != self.popularity.shape:
            raise ValueError(
                f"categories: expected one per product ({len(self.popularity)}), got {tuple(self.categories.shape)}"
            )
        if not 0 < self.head_share < 1:
            raise ValueError(f"head_share: must lie in (0, 1), got {self.head_share}")

    @property
    def n_products(self) -> int:
        return len(self.popularity)

    @property
    def head(self) -> torch.Tensor:
        """(N,) bool: the top ``head_share`` of products by popularity (at least one)."""
        n_head = max(1, round(self.head_share * self.n_products))
        mask = torch.zeros(self.n_products, dtype=torch.bool)
        mask[self.popularity.topk(n_head).indices] = True
        return mask
