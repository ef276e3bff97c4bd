"""The audit against an environment: served banners scored exactly, per segment, with merit.

``EnvAudit`` is what ``Evaluator`` calls when it is given an ``AuditWorld``: the same fixed evaluation
users for every policy, S sampled banners per context for a policy (its served distribution), the
oracle's one banner per context, and per-segment values of the greedy banners.
"""

from __future__ import annotations

import torch

from recsys_rl.audit.exposure import served_banners
from recsys_rl.audit.report import audit_banners
from recsys_rl.audit.segments import segment_values, segments
from recsys_rl.audit.world import AuditWorld
from recsys_rl.config import RewardScheme
from recsys_rl.env import Environment
from recsys_rl.records import ContextBatch
from recsys_rl.rewards import expected_reward, expected_reward_per_position

SAMPLES_PER_CONTEXT = 2
"""Banners drawn per evaluation context to estimate served exposure (4096 contexts x 2 = 8192 banners)."""


class EnvAudit:
    def __init__(
        self,
        env: Environment,
        world: AuditWorld,
        users: torch.Tensor,
        contexts: ContextBatch,
        scheme: RewardScheme,
        seed: int,
        samples: int = SAMPLES_PER_CONTEXT,
    ):
        if world.n_products != env.n_products:
            raise ValueError(
                f"audit: the world describes {world.n_products} products, the environment has {env.n_products}"
            )
        self.env, self.world, self.users, self.contexts = env, world, users, contexts
        self.scheme, self.seed, self.samples = scheme, seed, samples
        self.masks = segments(contexts.history, users, world.user_groups)
        self.reference_values: torch.Tensor | None = None
        self.oracle_values: torch.Tensor | None = None

    def values(self, banners: torch.Tensor) -> torch.Tensor:
        """(E,) exact expected reward of greedy banners (E, K) for the evaluation users."""
        return expected_reward(self.scheme, self.env.expected(self.users, banners)).double()

    def _given_examined(self, rows: torch.Tensor, banners: torch.Tensor) -> torch.Tensor:
        per_pos = expected_reward_per_position(self.scheme, self.env.expected(self.users[rows], banners))
        return per_pos / self.world.examination[: banners.shape[1]].clamp_min(1e-12)

    def of_banners(self, banners: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
        """A deterministic policy's audit (e.g. the oracle): its one banner (E, K) per context."""
        rows = torch.arange(len(banners))
        g = torch.Generator().manual_seed(self.seed + 3)
        return audit_banners(self.world, self.contexts, rows, banners, self._given_examined(rows, banners), g)

    def of_policy(self, scorer, k: int) -> tuple[dict[str, float], torch.Tensor]:
        """A Plackett-Luce policy's audit under its served distribution (``samples`` banners a context)."""
        g = torch.Generator().manual_seed(self.seed + 2)
        rows, banners = served_banners(scorer, self.contexts, k, self.samples, g, self.world.n_products)
        return audit_banners(self.world, self.contexts, rows, banners, self._given_examined(rows, banners), g)

    def segment_figures(self, greedy: torch.Tensor) -> dict[str, float]:
        """Per-segment value and gap closed of greedy banners (E, K) (reference and oracle set first)."""
        if self.reference_values is None or self.oracle_values is None:
            return {}
        return segment_values(self.masks, self.values(greedy), self.reference_values, self.oracle_values)
