"""The user population: taste, price sensitivity, basket propensity and consideration sets.

A user's consideration set (their top-M products by affinity) is what their viewed product and past
purchases are drawn from, so a context reveals the taste only partly. It is precomputed once, in chunks
of users, so that a 100k-product catalogue never needs an (n_users, N) matrix in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from recsys_rl.config import SimConfig
from simulator.catalogue import Catalogue

SENSITIVITY_LOG_SIGMA = 0.5
POPULARITY_SMOOTHING = 0.01
"""Share of popularity mass spread uniformly, so that no product has probability zero."""
AFFINITY_CHUNK_ELEMENTS = 1 << 22
"""Largest (users x products) block scored at once: ~16 MB per float32 tensor (the oracle holds ~10).
Larger blocks measured no faster on 2 cores: the top-k and matmul are memory-bound."""


@dataclass
class Population:
    """U users. taste: (U, d) unit vectors; favourite: (U,) long category; sensitivity: (U,) >= 0;
    basket: (U,) >= 0 extra-units rate; consider_items: (U, M) long, by descending affinity;
    consider_logits: (U, M) context logits (affinity / temperature, + repeat_interest on the first
    repeat_interest_items); popularity: (N,) sums to 1."""

    taste: torch.Tensor
    favourite: torch.Tensor
    sensitivity: torch.Tensor
    basket: torch.Tensor
    consider_items: torch.Tensor
    consider_logits: torch.Tensor
    popularity: torch.Tensor

    @property
    def n_users(self) -> int:
        return self.taste.shape[0]


def user_chunk_size(n_products: int) -> int:
    """Users per block when scoring the whole catalogue, so one block holds ~4M affinities."""
    return max(1, AFFINITY_CHUNK_ELEMENTS // n_products)


def build_population(cfg: SimConfig, catalogue: Catalogue, generator: torch.Generator) -> Population:
    """Draw the users from ``generator`` (continuing the stream after the catalogue)."""
    u, d = cfg.n_users, cfg.latent_dim
    favourite = torch.multinomial(catalogue.category_weights, u, replacement=True, generator=generator)
    noise = torch.randn(u, d, generator=generator) / math.sqrt(d)
    taste = F.normalize(catalogue.centres[favourite] + cfg.taste_spread * noise, dim=-1)

    # log-normal with mean price_sensitivity_mean: exp(sigma*Z - sigma^2/2) has mean 1.
    z = torch.randn(u, generator=generator)
    sensitivity = cfg.price_sensitivity_mean * torch.exp(
        SENSITIVITY_LOG_SIGMA * z - SENSITIVITY_LOG_SIGMA**2 / 2
    )
    basket = cfg.basket_mean * torch.empty(u).exponential_(1.0, generator=generator)

    items, logits = consideration_sets(
        taste, catalogue.vectors, cfg.consideration_size, cfg.context_temperature
    )
    if cfg.repeat_interest > 0:  # the favourites are also what the user keeps viewing and buying
        logits[:, : cfg.repeat_interest_items] += cfg.repeat_interest
    return Population(
        taste=taste,
        favourite=favourite,
        sensitivity=sensitivity,
        basket=basket,
        consider_items=items,
        consider_logits=logits,
        popularity=consideration_popularity(items, catalogue.n_products),
    )


EXACT_CONSIDERATION_MAX = 200_000
"""Catalogues up to this size get exact consideration sets (brute force, ~9 s at 100k); larger ones use
the policy's own retrieval, a faiss IVF inner-product index (``recsys_rl.candidates``)."""
CONSIDERATION_NPROBE = 32


def consideration_sets(
    taste: torch.Tensor, vectors: torch.Tensor, size: int, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each user's top-``size`` products by affinity <t_u, v_j>, scored in blocks of users.

    taste: (U, d); vectors: (N, d) -> items (U, M) long (descending affinity), logits (U, M) = A / T.
    Above EXACT_CONSIDERATION_MAX products the top is found by an IVF index (seeded, deterministic):
    bounded time and memory at 10^6 products; the affinities of the found products are exact.
    """
    n_users, n_products = taste.shape[0], vectors.shape[0]
    if n_products > EXACT_CONSIDERATION_MAX:
        return _indexed_consideration_sets(taste, vectors, size, temperature)
    step = user_chunk_size(n_products)
    items = torch.empty(n_users, size, dtype=torch.long)
    logits = torch.empty(n_users, size)
    vt = vectors.T.contiguous()
    for start in range(0, n_users, step):
        stop = min(start + step, n_users)
        top = torch.topk(taste[start:stop] @ vt, size, dim=1, sorted=True)
        items[start:stop] = top.indices
        logits[start:stop] = top.values / temperature
    return items, logits


def consideration_popularity(items: torch.Tensor, n_products: int) -> torch.Tensor:
    """(N,) share of users whose consideration set holds each product, smoothed and summing to 1."""
    share = torch.bincount(items.reshape(-1), minlength=n_products).to(torch.float64) / items.shape[0]
    share = share / share.sum()
    pop = (1 - POPULARITY_SMOOTHING) * share + POPULARITY_SMOOTHING / n_products
    return (pop / pop.sum()).to(torch.float32)


def _indexed_consideration_sets(
    taste: torch.Tensor, vectors: torch.Tensor, size: int, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    from recsys_rl.candidates import IVFIndex

    index = IVFIndex(vectors, None, nprobe=CONSIDERATION_NPROBE)
    items = torch.empty(taste.shape[0], size, dtype=torch.long)
    logits = torch.empty(taste.shape[0], size)
    step = 8192
    for start in range(0, taste.shape[0], step):
        t = taste[start : start + step]
        ids = index.search(t, size)
        bad = (ids < 0).any(1)
        if bad.any():  # probed lists held fewer than `size` products: exact for those users
            rows = bad.nonzero().squeeze(1)
            ids[rows] = torch.topk(t[rows] @ vectors.T, size, dim=1).indices
        aff = torch.bmm(vectors[ids], t.unsqueeze(2)).squeeze(2)
        aff, order = aff.sort(1, descending=True)
        items[start : start + step] = ids.gather(1, order)
        logits[start : start + step] = aff / temperature
    return items, logits
