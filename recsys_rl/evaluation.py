"""Exact evaluation of banner policies on an environment: the same metrics whatever the training reward.

Greedy (top-5) banners are scored with the environment's exact expectations, so numbers carry no
sampling noise; KL and entropy are exact per position along banners sampled from the policy.
All rates are per impression (summed over the 5 positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys_rl import slate
from recsys_rl.config import RewardScheme
from recsys_rl.env import Environment
from recsys_rl.records import BANNER_SIZE, ContextBatch
from recsys_rl.rewards import expected_reward

CHUNK = 1024


@dataclass
class EvalSet:
    """A fixed set of users with fixed contexts, so every policy is judged on the same impressions."""

    users: torch.Tensor  # (E,)
    contexts: ContextBatch  # E contexts


def make_eval_set(env: Environment, n: int, seed: int) -> EvalSet:
    g = torch.Generator().manual_seed(seed)
    users = env.sample_users(n, g)
    return EvalSet(users, env.contexts(users, g))


def banner_metrics(
    env: Environment, users: torch.Tensor, banners: torch.Tensor, schemes: dict[str, RewardScheme]
) -> dict[str, float]:
    """Exact outcome metrics of given banners (E, K) for users (E,)."""
    exp = env.expected(users, banners)
    m = {
        "ctr": exp.click.sum(-1).mean().item(),
        "purchase_rate": exp.purchase.sum(-1).mean().item(),
        "units_per_impression": exp.units.sum(-1).mean().item(),
        "revenue_per_impression": exp.revenue.sum(-1).mean().item(),
        "multi_purchase_rate": exp.multi.sum(-1).mean().item(),
        "coverage": banners.unique().numel() / env.n_products,
    }
    for name, s in schemes.items():
        m[f"reward_{name}"] = expected_reward(s, exp).mean().item()
    return m


@torch.no_grad()
def divergence(
    logits_fn, reference, contexts: ContextBatch, generator: torch.Generator, temperature: float = 1.0
) -> tuple[float, float]:
    """(KL(pi || ref), entropy(pi)) per banner, exact per position along banners drawn from pi."""
    kls, ents = [], []
    for i in range(0, len(contexts), CHUNK):
        ctx = contexts[i : i + CHUNK]
        lp = logits_fn(ctx) / temperature
        lq = reference.logits(ctx)
        items = slate.gumbel_topk(lp, BANNER_SIZE, generator)
        kls.append(slate.per_position_kl(lp, lq, items).sum(-1))
        ents.append(slate.per_position_entropy(lp, items).sum(-1))
    return torch.cat(kls).mean().item(), torch.cat(ents).mean().item()


@torch.no_grad()
def greedy_banners(logits_fn, contexts: ContextBatch) -> torch.Tensor:
    return torch.cat(
        [
            slate.greedy(logits_fn(contexts[i : i + CHUNK]), BANNER_SIZE)
            for i in range(0, len(contexts), CHUNK)
        ]
    )


class Evaluator:
    """Scores policies against the reference and the oracle on one fixed evaluation set.

    ``oracle_gap_closed`` = (policy - reference) / (oracle - reference) on the training scheme's
    expected reward: 0 is the reference, 1 is the best any policy could do knowing the true user.
    """

    def __init__(
        self,
        env: Environment,
        reference,
        train_scheme: RewardScheme,
        schemes: dict[str, RewardScheme],
        n_users: int,
        seed: int,
    ):
        self.env, self.reference, self.scheme, self.seed = env, reference, train_scheme, seed
        self.schemes = {**schemes, train_scheme.name: train_scheme}
        self.eval_set = make_eval_set(env, n_users, seed)
        self.reference_metrics = self.score_banners(greedy_banners(reference.logits, self.eval_set.contexts))
        oracle = env.oracle(self.eval_set.users, train_scheme)
        self.oracle_metrics = self.score_banners(oracle)

    def score_banners(self, banners: torch.Tensor) -> dict[str, float]:
        return banner_metrics(self.env, self.eval_set.users, banners, self.schemes)

    def gap_closed(self, value: float) -> float:
        key = f"reward_{self.scheme.name}"
        ref, orc = self.reference_metrics[key], self.oracle_metrics[key]
        return (value - ref) / (orc - ref) if orc > ref else 0.0

    def __call__(self, policy) -> dict[str, float]:
        """All metrics of a policy with a ``logits(ContextBatch)`` method (greedy banners)."""
        m = self.score_banners(greedy_banners(policy.logits, self.eval_set.contexts))
        g = torch.Generator().manual_seed(self.seed + 1)
        m["kl_to_reference"], m["entropy"] = divergence(
            policy.logits, self.reference, self.eval_set.contexts, g
        )
        m["oracle_gap_closed"] = self.gap_closed(m[f"reward_{self.scheme.name}"])
        return m
