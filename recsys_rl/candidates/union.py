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
    """(B, M, S) float: 1 where ids (B, M) appear in source s's list (B, W_s), S <= 8.

    One sorted array per row of the distinct keys id * 8 + s over every list, and one batched binary
    search for each id's first key: its keys, at most one per source, are consecutive. O(B (W + M)
    log W), never (B, M, W); one search instead of one per source (the searches were the cost)."""
    n_src = len(lists)
    out = torch.zeros(*ids.shape, n_src)
    lst = torch.cat(lists, 1) if n_src else torch.empty(len(ids), 0, dtype=torch.long)
    if lst.shape[1] == 0:
        return out
    tag = torch.cat([torch.full((w.shape[1],), s, dtype=torch.long) for s, w in enumerate(lists)])
    keys = torch.where(lst >= 0, lst * 8 + tag, -1).sort(1).values  # (B, W)
    dup = torch.zeros_like(keys, dtype=torch.bool)
    dup[:, 1:] = keys[:, 1:] == keys[:, :-1]
    keys = keys.masked_fill(dup, torch.iinfo(keys.dtype).max).sort(1).values  # repeats moved past the end
    width = keys.shape[1]
    first = torch.searchsorted(keys, ids * 8)  # (B, M) the first key of each id, if any
    step = torch.zeros_like(first)
    for _ in range(n_src):  # each id's keys are consecutive, one per source at most
        pos = (first + step).clamp_max(width - 1)
        k = keys.gather(1, pos)
        hit = (k >= 0) & (k // 8 == ids) & (first + step < width) & (ids >= 0)
        out.scatter_add_(2, (k % 8).clamp_max(n_src - 1).unsqueeze(2), hit.unsqueeze(2).float())
        step += 1
    return out
