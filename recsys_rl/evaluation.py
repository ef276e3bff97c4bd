"""Exact evaluation of banner policies on an environment: the same metrics whatever the training reward.

Greedy (top-K) banners are scored with the environment's exact expectations, so numbers carry no
sampling noise; KL and entropy are exact per position along banners sampled from the policy. Beside
the greedy value, every evaluation reports the value of one seeded draw of the served (sampling)
distribution per user (``sampled_gap_closed``), so a gap cannot be bought by flattening the logits.
All rates are per impression (summed over the K positions of a banner; K = the environment's
``banner_size``, 5 by default).

Large catalogues: a policy that ``uses_candidates`` is evaluated as it serves, over its candidates
(greedy = top-K of its candidates; KL and entropy over them, with the reference renormalised over
the policy's candidates as in ``slate``). Anything scored over the full catalogue (bandits, small N)
is processed in row blocks of at most ``BLOCK_ELEMENTS`` scores, with the O(B N) closed forms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys_rl import slate
from recsys_rl.audit.on_env import EnvAudit
from recsys_rl.audit.world import AuditWorld
from recsys_rl.config import RewardScheme
from recsys_rl.env import Environment
from recsys_rl.records import BANNER_SIZE, ContextBatch
from recsys_rl.rewards import expected_reward

CHUNK = 1024
BLOCK_ELEMENTS = 1 << 22


def _chunk(n_products: int) -> int:
    """Rows per block so that one (rows, N) score block stays at ~16 MB."""
    return max(1, min(CHUNK, BLOCK_ELEMENTS // max(n_products, 1)))


def _restricted(policy) -> bool:
    return bool(getattr(policy, "uses_candidates", False))


def banner_size_of(scorer, default: int = BANNER_SIZE) -> int:
    """K of a policy, of a policy's bound ``logits`` method, or ``default`` for a plain callable."""
    owner = getattr(scorer, "__self__", scorer)
    return int(getattr(owner, "banner_size", default))


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
    """Exact outcome metrics of given banners (E, K) for users (E,).

    Counts are per impression (one banner of K slots: clicks_per_impression can exceed 1); ``ctr`` is the
    per-slot rate, clicks per displayed product, so it reads as a rate in [0, 1] whatever K is."""
    exp = env.expected(users, banners)
    clicks = exp.click.sum(-1).mean().item()
    m = {
        "clicks_per_impression": clicks,
        "ctr": clicks / banners.shape[-1],
        "purchases_per_impression": exp.purchase.sum(-1).mean().item(),
        "units_per_impression": exp.units.sum(-1).mean().item(),
        "revenue_per_impression": exp.revenue.sum(-1).mean().item(),
        "multi_purchases_per_impression": exp.multi.sum(-1).mean().item(),
        "coverage": banners.unique().numel() / env.n_products,
    }
    for name, s in schemes.items():
        m[f"reward_{name}"] = expected_reward(s, exp).mean().item()
    return m


@torch.no_grad()
def divergence(
    logits_fn,
    reference,
    contexts: ContextBatch,
    generator: torch.Generator,
    temperature: float = 1.0,
    k: int | None = None,
) -> tuple[float, float]:
    """(KL(pi || ref), entropy(pi)) per banner of k products (default: the reference's ``banner_size``),
    exact per position along banners drawn from pi.

    ``logits_fn``: a ``logits(ContextBatch)`` callable, or a policy that ``uses_candidates`` (then
    both are computed over its candidates)."""
    k = banner_size_of(reference) if k is None else k
    kls, ents = [], []
    restricted = _restricted(logits_fn)
    step = CHUNK if restricted else _chunk(reference.n_products)
    for i in range(0, len(contexts), step):
        ctx = contexts[i : i + step]
        if restricted:
            ids = logits_fn.candidates(ctx)
            lp = logits_fn.candidate_logits(ctx, ids) / temperature
            lq = reference.candidate_logits(ctx, ids)
        else:
            lp = logits_fn(ctx) / temperature
            lq = reference.logits(ctx)
        items = slate.gumbel_topk(lp, k, generator)
        _, kl, ent = slate.banner_terms(lp, lq, items)
        kls.append(kl)
        ents.append(ent)
    return torch.cat(kls).mean().item(), torch.cat(ents).mean().item()


@torch.no_grad()
def greedy_banners(
    logits_fn, contexts: ContextBatch, n_products: int | None = None, k: int | None = None
) -> torch.Tensor:
    """(E, k) top-k banners: from ``logits_fn(ctx)`` scores in row blocks (``n_products`` sizes them),
    or a policy's own ``greedy`` (over its candidates) when it ``uses_candidates``. k defaults to the
    policy's ``banner_size`` (5 for a plain callable)."""
    k = banner_size_of(logits_fn) if k is None else k
    if _restricted(logits_fn):
        step = CHUNK

        def fn(ctx):
            return logits_fn.greedy(ctx, k)

    else:
        if not callable(logits_fn) or hasattr(logits_fn, "greedy"):  # a policy on the full path
            logits_fn = logits_fn.logits
        step = CHUNK if n_products is None else _chunk(n_products)

        def fn(ctx):
            return slate.greedy(logits_fn(ctx), k)

    return torch.cat([fn(contexts[i : i + step]) for i in range(0, len(contexts), step)])


@torch.no_grad()
def sampled_banners(
    logits_fn,
    contexts: ContextBatch,
    generator: torch.Generator,
    n_products: int | None = None,
    k: int | None = None,
) -> torch.Tensor:
    """(E, k) banners drawn from the policy's sampling distribution (what it serves), as
    ``greedy_banners`` but a Plackett–Luce draw instead of the top-k: the value of the served policy,
    which scaling the logits down cannot keep while it cuts the KL."""
    k = banner_size_of(logits_fn) if k is None else k
    if _restricted(logits_fn):
        step = CHUNK

        def fn(ctx):
            ids, logits = logits_fn.candidates_and_logits(ctx)
            return ids.gather(1, slate.gumbel_topk(logits, k, generator))

    else:
        if not callable(logits_fn) or hasattr(logits_fn, "greedy"):
            logits_fn = logits_fn.logits
        step = CHUNK if n_products is None else _chunk(n_products)

        def fn(ctx):
            return slate.gumbel_topk(logits_fn(ctx), k, generator)

    return torch.cat([fn(contexts[i : i + step]) for i in range(0, len(contexts), step)])


def _scorer(policy):
    return policy if _restricted(policy) else policy.logits


class Evaluator:
    """Scores policies against the reference and the oracle on one fixed evaluation set.

    ``oracle_gap_closed`` = (policy - reference) / (oracle - reference) on the training scheme's
    expected reward: 0 is the reference, 1 is the best any policy could do knowing the true user.
    With an ``audit`` world every row also carries the bias audit (``recsys_rl.audit``) of the
    served banners, and ``exposures`` keeps each row's (N,) exposure for the Lorenz curve.
    """

    def __init__(
        self,
        env: Environment,
        reference,
        train_scheme: RewardScheme,
        schemes: dict[str, RewardScheme],
        n_users: int,
        seed: int,
        audit: AuditWorld | None = None,
    ):
        self.env, self.reference, self.scheme, self.seed = env, reference, train_scheme, seed
        self.schemes = {**schemes, train_scheme.name: train_scheme}
        self.eval_set = make_eval_set(env, n_users, seed)
        self.k = int(getattr(env, "banner_size", BANNER_SIZE))
        ref_greedy = greedy_banners(_scorer(reference), self.eval_set.contexts, env.n_products, self.k)
        self.reference_metrics = self.score_banners(ref_greedy)
        oracle = env.oracle(self.eval_set.users, train_scheme)
        self.oracle_metrics = self.score_banners(oracle)
        self.audit = None
        if audit is not None:
            users, contexts = self.eval_set.users, self.eval_set.contexts
            self.audit = EnvAudit(env, audit, users, contexts, train_scheme, seed)
        self.exposures: dict[str, torch.Tensor] = {}
        if self.audit is not None:
            self.audit.reference_values = self.audit.values(ref_greedy)
            self.audit.oracle_values = self.audit.values(oracle)
            m, self.exposures["reference"] = self.audit.of_policy(_scorer(reference), self.k)
            self.reference_metrics.update(m, **self.audit.segment_figures(ref_greedy))
            m, self.exposures["oracle"] = self.audit.of_banners(oracle)
            self.oracle_metrics.update(m, **self.audit.segment_figures(oracle))

    def score_banners(self, banners: torch.Tensor) -> dict[str, float]:
        return banner_metrics(self.env, self.eval_set.users, banners, self.schemes)

    def gap_closed(self, value: float) -> float:
        key = f"reward_{self.scheme.name}"
        ref, orc = self.reference_metrics[key], self.oracle_metrics[key]
        return (value - ref) / (orc - ref) if orc > ref else 0.0

    def __call__(self, policy) -> dict[str, float]:
        """All metrics of a policy with a ``logits(ContextBatch)`` method (greedy banners)."""
        greedy = greedy_banners(_scorer(policy), self.eval_set.contexts, self.env.n_products, self.k)
        m = self.score_banners(greedy)
        if self.audit is not None:
            audit, self.exposures["fine-tuned"] = self.audit.of_policy(_scorer(policy), self.k)
            m.update(audit, **self.audit.segment_figures(greedy))
        g = torch.Generator().manual_seed(self.seed + 1)
        m["kl_to_reference"], m["entropy"] = divergence(
            _scorer(policy), self.reference, self.eval_set.contexts, g, k=self.k
        )
        m["kl_per_slot"] = m["kl_to_reference"] / self.k  # the unit of train.kl_target
        m["oracle_gap_closed"] = self.gap_closed(m[f"reward_{self.scheme.name}"])
        key = f"reward_{self.scheme.name}"
        drawn = sampled_banners(_scorer(policy), self.eval_set.contexts, g, self.env.n_products, self.k)
        m[f"sampled_{key}"] = banner_metrics(
            self.env, self.eval_set.users, drawn, {self.scheme.name: self.scheme}
        )[key]
        m["sampled_gap_closed"] = self.gap_closed(m[f"sampled_{key}"])
        return m
