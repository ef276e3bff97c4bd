"""The oracle banner: the expected-reward-maximising banner given the true user.

A scheme's expected reward is linear in per-position outcomes. Under "pbm" a product j at position k
contributes position_bias[k] * g_uj, where g_uj is its expected reward given examination
(``response.reward_given_examination``). With position_bias non-increasing, the rearrangement
inequality makes "the top-K products by g, in descending order" exactly optimal.

Under "cascade" the same banner is an approximation: a click at an early position stops the scan, so
the exact optimum trades g against click probability. It is still a strong ceiling, not the maximum.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from recsys_rl.config import RewardScheme
from recsys_rl.records import BANNER_SIZE
from simulator.response import Rates, reward_given_examination
from simulator.users import user_chunk_size


def oracle_banners(
    users: torch.Tensor,
    n_products: int,
    catalogue_rates: Callable[[torch.Tensor], Rates],
    scheme: RewardScheme,
    k: int = BANNER_SIZE,
) -> torch.Tensor:
    """(B, k) oracle banners for users (B,): the top-k products by expected reward given examination.

    ``catalogue_rates(users_chunk)`` gives Rates of shape (b, N) over the whole catalogue; it is called
    on blocks of users so a 100k-product catalogue stays within a few tens of MB.
    """
    out = torch.empty(len(users), k, dtype=torch.long)
    step = user_chunk_size(n_products)
    for start in range(0, len(users), step):
        g = reward_given_examination(catalogue_rates(users[start : start + step]), scheme)
        out[start : start + step] = torch.topk(g, k, dim=1, sorted=True).indices
    return out


def oracle_within(
    rates: Callable[[torch.Tensor, torch.Tensor], Rates],
    users: torch.Tensor,
    candidates: torch.Tensor,
    scheme: RewardScheme,
    k: int = BANNER_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The oracle banner restricted to each user's candidates (B, M), -1 pads never chosen: (banners
    (B, k), -1 where the set holds fewer than k products; gains (B, k), each chosen product's expected
    reward given examination, 0 at a pad). sum_k position_bias[k] * gains[k] is the banner's expected
    reward under "pbm" (exactly; a strong approximation under "cascade"): the ceiling of a policy over
    that candidate set. ``rates(users, items)`` gives Rates of the (b, M) items (``Simulator.rates``)."""
    banners = torch.empty(len(users), k, dtype=torch.long)
    gains = torch.empty(len(users), k)
    step = max(1, (1 << 22) // max(candidates.shape[1], 1))
    for start in range(0, len(users), step):
        cand = candidates[start : start + step]
        g = reward_given_examination(rates(users[start : start + step], cand.clamp_min(0)), scheme)
        top = torch.topk(g.masked_fill(cand < 0, float("-inf")), k, dim=1, sorted=True)
        pad = torch.isinf(top.values)
        banners[start : start + step] = cand.gather(1, top.indices).masked_fill(pad, -1)
        gains[start : start + step] = top.values.masked_fill(pad, 0.0)
    return banners, gains
