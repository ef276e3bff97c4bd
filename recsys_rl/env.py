"""What the engine needs from an environment it can learn against (the simulator implements it).

The engine never imports ``simulator``: trainers and evaluation take any object with this shape.
Users are rows of a fixed population, addressed by id (hidden from the policy).
"""

from __future__ import annotations

from typing import Protocol

import torch

from recsys_rl.config import RewardScheme
from recsys_rl.records import ContextBatch, ExpectedOutcome, OutcomeBatch


class Environment(Protocol):
    n_products: int
    banner_size: int  # K, products per banner
    prices: torch.Tensor  # (N,) unit price of each product
    popularity: torch.Tensor  # (N,) probability a random user considers each product (behaviour prior)

    def sample_users(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n,) long user ids drawn from the population."""
        ...

    def contexts(self, users: torch.Tensor, generator: torch.Generator) -> ContextBatch:
        """A fresh context (viewed product + past purchases) for each user id: (B,) -> ContextBatch."""
        ...

    def respond(self, users: torch.Tensor, banners: torch.Tensor, generator: torch.Generator) -> OutcomeBatch:
        """Sampled outcomes of showing banners (B, K) to users (B,)."""
        ...

    def expected(self, users: torch.Tensor, banners: torch.Tensor) -> ExpectedOutcome:
        """Exact expected outcomes of banners (B, K) shown to users (B,)."""
        ...

    def oracle(self, users: torch.Tensor, scheme: RewardScheme) -> torch.Tensor:
        """(B, K) expected-reward-maximising banner for each true user under ``scheme``."""
        ...
