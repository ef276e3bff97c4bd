"""Best-of-n against a reward model: draw n banners from the reference, keep the one it scores highest.

The baseline RL against a learned reward is judged beside (Gao, Schulman & Hilton 2022). Its KL to
the reference is analytic when the n draws are distinct with probability one (each banner's
reference probability small):  KL(BoN_n || ref) = log n - (n - 1) / n  (Stiennon et al. 2020); with
ties it is at most that.
"""

from __future__ import annotations

import math

import torch

from recsys_rl import slate
from recsys_rl.config import RewardScheme
from recsys_rl.records import ContextBatch
from recsys_rl.reward_model.model import BannerRewardModel
from recsys_rl.reward_model.scoring import banner_rewards

CHUNK_BANNERS = 1 << 16


def best_of_n_kl(n: int) -> float:
    """Analytic KL(best-of-n || reference) in nats, for distinct draws."""
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def n_for_kl(kl: float) -> int:
    """The n whose analytic best-of-n KL is closest to ``kl`` (at least 1).

    Bisection on n (the KL grows like log n, so n ~ e^(kl + 1): a step-by-step search would take
    e^33 steps at kl = 32); huge n come back as they are, for the caller's --bon-max-n to skip.
    """
    lo, hi = 1, 2
    while best_of_n_kl(hi) <= kl:  # largest lo with KL(lo) <= kl lies in [lo, hi)
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if best_of_n_kl(mid) <= kl else (lo, mid)
    return hi if abs(best_of_n_kl(hi) - kl) < abs(best_of_n_kl(lo) - kl) else lo


@torch.no_grad()
def best_of_n(
    reference_logits_fn,
    model: BannerRewardModel,
    scheme: RewardScheme,
    ctx: ContextBatch,
    n: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """((C, K) chosen banners, (C,) their proxy reward): the best of n reference draws per context.

    Contexts are taken a block at a time so that at most ~65k banners are scored at once.
    """
    per = max(1, CHUNK_BANNERS // n)
    chosen, scores = [], []
    for s in range(0, len(ctx), per):
        c = ctx[s : s + per]
        logits = reference_logits_fn(c)  # (c, N)
        rows = torch.arange(len(c)).repeat_interleave(n)
        items = slate.gumbel_topk(logits[rows], model.n_positions, generator)  # (c*n, K)
        r = banner_rewards(model, scheme, c, items, rows).view(len(c), n)
        best = r.argmax(1)
        chosen.append(items.view(len(c), n, -1)[torch.arange(len(c)), best])
        scores.append(r[torch.arange(len(c)), best])
    return torch.cat(chosen), torch.cat(scores)
