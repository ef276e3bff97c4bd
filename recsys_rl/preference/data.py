"""Preference data from logged banners, graded by the reward scheme (click < purchase < multi-unit).

Three shapes, one per family of objectives (P examples each; row ids index the logs):
- ``InBanner`` (S-DPO): a product with a positive grade against the products shown beside it with a
  lower grade, each weighted by the examination probability of its slot;
- ``BannerPairs`` (DPO / IPO): two logged banners that share a context key (the viewed product by
  default), the higher-graded one chosen, with their grade difference for an optional margin;
- ``Unpaired`` (KTO): every banner, desirable when its grade is positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys_rl.config import RewardScheme
from recsys_rl.records import LoggedBatch
from recsys_rl.rewards import position_rewards


@dataclass
class InBanner:
    """rows (P,) long; chosen (P,) long product ids; negatives (P, K) long product ids (the banner);
    examined (P, K) float: examination probability of each negative's slot, 0 where it is no negative
    (the chosen product itself, or a neighbour graded as high)."""

    rows: torch.Tensor
    chosen: torch.Tensor
    negatives: torch.Tensor
    examined: torch.Tensor

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class BannerPairs:
    """chosen, rejected (P,) long row ids of the logs; grade_gap (P,) float > 0."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    grade_gap: torch.Tensor

    def __len__(self) -> int:
        return len(self.chosen)


@dataclass
class Unpaired:
    """rows (P,) long row ids; desirable (P,) bool."""

    rows: torch.Tensor
    desirable: torch.Tensor

    def __len__(self) -> int:
        return len(self.rows)


def in_banner(logs: LoggedBatch, scheme: RewardScheme, examination: torch.Tensor | None = None) -> InBanner:
    """One example per (banner, slot) with a positive grade and an examined lower-graded neighbour. ``examination`` (K,): probability that a
    user examines each slot (the position bias; default 1 everywhere)."""
    grade = position_rewards(scheme, logs.outcomes)  # (n, K)
    k = grade.shape[1]
    exam = torch.ones(k) if examination is None else examination.to(grade.dtype)
    if exam.shape != (k,):
        raise ValueError(f"examination: {len(exam)} slot probabilities for banners of {k}")
    rows, slot = (grade > 0).nonzero(as_tuple=True)  # (P,)
    lower = grade[rows] < grade[rows, slot].unsqueeze(1)  # (P, K)
    examined = lower * exam
    keep = examined.sum(1) > 0  # a slot graded at least as high as every examined neighbour rejects none
    rows, slot, examined = rows[keep], slot[keep], examined[keep]
    items = logs.banners.items[rows]
    return InBanner(rows, items.gather(1, slot[:, None]).squeeze(1), items, examined)


def context_pairs(
    logs: LoggedBatch,
    scheme: RewardScheme,
    rounds: int,
    seed: int,
    key: torch.Tensor | None = None,
) -> BannerPairs:
    """Pairs of banners with the same context ``key`` (n,) (default: the viewed product) and different
    grades. Each of ``rounds`` shuffles the banners within their key and pairs neighbours, so a key
    shown m times gives up to m - 1 pairs a round."""
    key = logs.contexts.viewed if key is None else key
    grade = position_rewards(scheme, logs.outcomes).sum(-1)  # (n,)
    g = torch.Generator().manual_seed(seed)
    chosen, rejected = [], []
    for _ in range(rounds):
        order = torch.randperm(len(key), generator=g)
        order = order[key[order].argsort(stable=True)]  # grouped by key, shuffled within
        a, b = order[:-1], order[1:]
        keep = (key[a] == key[b]) & (grade[a] != grade[b])
        a, b = a[keep], b[keep]
        win = grade[a] > grade[b]
        chosen.append(torch.where(win, a, b))
        rejected.append(torch.where(win, b, a))
    w, r = torch.cat(chosen), torch.cat(rejected)
    return BannerPairs(w, r, grade[w] - grade[r])


def unpaired(logs: LoggedBatch, scheme: RewardScheme) -> Unpaired:
    """Every banner, desirable when the scheme gives it a positive reward."""
    grade = position_rewards(scheme, logs.outcomes).sum(-1)
    return Unpaired(torch.arange(len(logs)), grade > 0)
