"""The union of candidate sources: per context, a fixed-size, deterministically ordered candidate set.

Why one function: the Plackett–Luce policy over its candidates has exact propensities only if every
place that scores a banner (serving, the learner, evaluation, OPE) builds the same set for the same
context and version. ``union`` is that set: the extra sources' lists in a fixed source order, then the
policy's own top products, de-duplicated keeping each product's first place, PAD (-1) dropped, the
first ``width`` kept. With the policy's top searched at ``width`` (its own M plus the extras' widths),
the set always holds the policy's top-M and every product the extras found.

``membership`` gives each candidate's source features: bit s set when source s listed it, recomputed
from the context alone, so a reference scoring the same ids gets the same features.
"""

from __future__ import annotations

import torch


def union(parts: list[torch.Tensor], width: int) -> torch.Tensor:
    """(B, width) long distinct ids: the first ``width`` distinct valid ids of the concatenated parts
    (each (B, W_s), -1 pads), in order. The last part must hold at least ``width`` distinct valid ids
    per row (the policy's top), so every row is filled."""
    pool = torch.cat(parts, 1)  # (B, T)
    srt = pool.sort(dim=1, stable=True)  # a repeat sorts right after its first occurrence
    repeat = torch.zeros_like(pool, dtype=torch.bool)
    repeat[:, 1:] = srt.values[:, 1:] == srt.values[:, :-1]
    bad = torch.zeros_like(repeat).scatter_(1, srt.indices, repeat) | (pool < 0)
    key = bad.long() * pool.shape[1] + torch.arange(pool.shape[1])  # valid first, in order
    return pool.gather(1, key.argsort(1)[:, :width])


def membership(ids: torch.Tensor, lists: list[torch.Tensor]) -> torch.Tensor:
    """(B, M, S) float: 1 where ids (B, M) appear in source s's list (B, W_s). Sorted lists and a
    batched binary search: O(B (W + M) log W) per source, never (B, M, W)."""
    out = torch.zeros(*ids.shape, len(lists))
    for s, lst in enumerate(lists):
        if lst.shape[1] == 0:
            continue
        srt = lst.sort(1).values
        pos = torch.searchsorted(srt, ids).clamp_max(srt.shape[1] - 1)
        out[..., s] = ((srt.gather(1, pos) == ids) & (ids >= 0)).float()
    return out
