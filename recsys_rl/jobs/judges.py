"""Gold judges for the KL sweep: the value a policy really has, beside the reward model's proxy.

- ``ExactJudge``: an ``Environment`` (the simulator) with exact expectations on a fixed user set; it
  values sampling policies and fixed banners (best-of-n) alike.
- ``DoublyRobustJudge``: no simulator, only held-out logs: the doubly robust estimate
  (``ope.pipeline.evaluate_policy``) of a Plackett-Luce policy. It cannot value best-of-n (not a
  Plackett-Luce policy with per-position marginals), so that gold is NaN and labelled as missing.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from recsys_rl import slate
from recsys_rl.config import RewardScheme
from recsys_rl.env import Environment
from recsys_rl.evaluation import make_eval_set
from recsys_rl.records import ContextBatch, LoggedBatch
from recsys_rl.rewards import expected_reward


class ExactJudge:
    label = "gold (exact, simulator)"

    def __init__(self, env: Environment, scheme: RewardScheme, n_users: int, seed: int, n_samples: int = 4):
        self.env, self.scheme, self.n_samples = env, scheme, n_samples
        es = make_eval_set(env, n_users, seed)
        self.users, self.contexts = es.users, es.contexts

    @torch.no_grad()
    def banners(self, items: torch.Tensor) -> float:
        """Exact mean expected reward of banners (E, K) shown to the judge's users, in its context order."""
        return expected_reward(self.scheme, self.env.expected(self.users, items)).mean().item()

    @torch.no_grad()
    def policy(self, logits_fn, generator: torch.Generator) -> float:
        """Exact value of the sampling policy PL(logits_fn(x)), averaged over n_samples banners per user."""
        logits = torch.cat(
            [logits_fn(self.contexts[s : s + 1024]) for s in range(0, len(self.contexts), 1024)]
        )
        vals = [
            self.banners(slate.gumbel_topk(logits, self.env.banner_size, generator))
            for _ in range(self.n_samples)
        ]
        return float(np.mean(vals))


class DoublyRobustJudge:
    label = "gold (doubly robust on held-out logs)"

    def __init__(
        self,
        holdout: LoggedBatch,
        scheme: RewardScheme,
        reference_logits_fn,
        seed: int,
        behaviour_marginals: np.ndarray | None = None,
        n_samples: int = 16,
    ):
        self.holdout, self.scheme, self.seed, self.n_samples = holdout, scheme, seed, n_samples
        self.reference, self.marginals = reference_logits_fn, behaviour_marginals
        self.contexts: ContextBatch = holdout.contexts

    def banners(self, items: torch.Tensor) -> float:
        return math.nan

    def policy(self, logits_fn, generator: torch.Generator) -> float:
        from recsys_rl.ope.pipeline import evaluate_policy

        res = evaluate_policy(
            self.holdout,
            logits_fn,
            self.scheme,
            ["dr"],
            behaviour_marginals=self.marginals,
            reference=self.reference,
            n_samples=self.n_samples,
            seed=self.seed,
        )
        return res.estimates["dr"].value
