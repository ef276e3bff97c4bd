"""The simulator as an ``recsys_rl.env.Environment``: a seeded catalogue and user population.

Everything stochastic after construction takes an explicit ``torch.Generator``, so the same config,
seed and generator state always give the same numbers. Responses and expectations touch only the K
banner products (gathered vectors), never the whole catalogue; only the oracle scores everything, in
blocks of users.
"""

from __future__ import annotations

import torch

from recsys_rl.config import RewardScheme, SimConfig
from recsys_rl.records import BANNER_SIZE, PAD, ContextBatch, ExpectedOutcome, OutcomeBatch
from simulator import response
from simulator.catalogue import Catalogue, build_catalogue
from simulator.contexts import draw_contexts
from simulator.oracle import oracle_banners
from simulator.users import Population, build_population


class Simulator:
    """E-commerce users responding to banners. Build with ``Simulator(cfg)``; see DESIGN.md."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        generator = torch.Generator().manual_seed(cfg.seed)
        self.catalogue: Catalogue = build_catalogue(cfg, generator)
        self.population: Population = build_population(cfg, self.catalogue, generator)
        self.position_bias = torch.tensor(cfg.position_bias, dtype=torch.float32)  # (K,)
        self.banner_size = cfg.banner_size
        self.feature_map = None  # (latent_dim, F): user features = taste @ map + noise (own seed: the
        if cfg.user_feature_dim:  # default world draws nothing more)
            g = torch.Generator().manual_seed(cfg.seed + 7919)
            # taste is a unit vector, so each feature's signal has variance ~1 against noise std
            self.feature_map = torch.randn(cfg.latent_dim, cfg.user_feature_dim, generator=g)

    @property
    def n_products(self) -> int:
        return self.catalogue.n_products

    @property
    def n_users(self) -> int:
        return self.population.n_users

    @property
    def prices(self) -> torch.Tensor:
        """(N,) unit prices."""
        return self.catalogue.prices

    @property
    def popularity(self) -> torch.Tensor:
        """(N,) smoothed share of users considering each product; sums to 1."""
        return self.population.popularity

    @property
    def category(self) -> torch.Tensor:
        """(N,) long category of each product: the item table a shop's candidate sources read."""
        return self.catalogue.category

    def sample_users(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n,) user ids, uniform over the population."""
        return torch.randint(0, self.n_users, (n,), generator=generator)

    def contexts(self, users: torch.Tensor, generator: torch.Generator) -> ContextBatch:
        """A fresh context per user (B,): viewed product (PAD on a home page) and PAD-padded purchase
        history, plus user features (B, F) when the world emits them (``user_feature_dim``)."""
        pop, cfg = self.population, self.cfg
        ctx = draw_contexts(pop.consider_items, pop.consider_logits, users, cfg.min_history, generator)
        if cfg.home_page_share > 0:
            home = torch.rand(len(users), generator=generator) < cfg.home_page_share
            ctx.viewed = ctx.viewed.masked_fill(home, PAD)
        if self.feature_map is not None:
            noise = (
                torch.randn(len(users), cfg.user_feature_dim, generator=generator) * cfg.user_feature_noise
            )
            ctx.user_features = pop.taste.index_select(0, users) @ self.feature_map + noise
        return ctx

    def affinity(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """<t_u, v_j> for users (B,) and items (B, K) -> (B, K), in [-1, 1]."""
        vectors = self.catalogue.vectors
        picked = vectors.index_select(0, items.reshape(-1)).view(*items.shape, vectors.shape[1])
        return torch.bmm(picked, self.population.taste.index_select(0, users).unsqueeze(2)).squeeze(2)

    def rates(self, users: torch.Tensor, items: torch.Tensor) -> response.Rates:
        """Response rates of users (B,) to products items (B, K), gathering only those K products."""
        cat, pop = self.catalogue, self.population
        return response.rates(
            self.cfg,
            self.affinity(users, items),
            cat.appeal.take(items),
            cat.quality.take(items),
            cat.log_price.take(items),
            cat.prices.take(items),
            pop.sensitivity.take(users).unsqueeze(1),
            pop.basket.take(users).unsqueeze(1),
            self._repeat(users, items),
        )

    def _repeat(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor | None:
        """(B, K) bool: items (B, K) among users' (B,) repeat-interest favourites; None when off."""
        if self.cfg.repeat_interest <= 0:
            return None
        favourites = self.population.consider_items[users, : self.cfg.repeat_interest_items]  # (B, R)
        return (items.unsqueeze(-1) == favourites.unsqueeze(1)).any(-1)

    def _catalogue_repeat(self, users: torch.Tensor) -> torch.Tensor | None:
        """(b, N) bool: every product against users' (b,) favourites; None when off."""
        if self.cfg.repeat_interest <= 0:
            return None
        favourites = self.population.consider_items[users, : self.cfg.repeat_interest_items]
        return torch.zeros(len(users), self.n_products, dtype=torch.bool).scatter_(1, favourites, True)

    def respond(self, users: torch.Tensor, banners: torch.Tensor, generator: torch.Generator) -> OutcomeBatch:
        """Sampled clicks, units and revenue (B, K) of banners (B, K) shown to users (B,)."""
        self._check(users, banners)
        return response.sample(
            self.rates(users, banners), self.position_bias, self.cfg.click_model, generator
        )

    def expected(self, users: torch.Tensor, banners: torch.Tensor) -> ExpectedOutcome:
        """Exact expected outcomes (B, K) of banners (B, K) shown to users (B,)."""
        self._check(users, banners)
        return response.expected(self.rates(users, banners), self.position_bias, self.cfg.click_model)

    def catalogue_rates(self, users: torch.Tensor) -> response.Rates:
        """Rates of users (b,) for every product: (b, N). Memory grows with b * N; keep b small."""
        cat, pop = self.catalogue, self.population
        return response.rates(
            self.cfg,
            pop.taste[users] @ cat.vectors.T,
            cat.appeal,
            cat.quality,
            cat.log_price,
            cat.prices,
            pop.sensitivity[users, None],
            pop.basket[users, None],
            self._catalogue_repeat(users),
        )

    def oracle(self, users: torch.Tensor, scheme: RewardScheme) -> torch.Tensor:
        """(B, K) banner maximising expected ``scheme`` reward per user; exact under pbm (see oracle.py)."""
        return oracle_banners(users, self.n_products, self.catalogue_rates, scheme, self.banner_size)

    def _check(self, users: torch.Tensor, banners: torch.Tensor) -> None:
        k = self.banner_size
        if banners.dim() != 2 or banners.shape[1] != k or banners.shape[0] != users.shape[0]:
            raise ValueError(
                f"banners: expected shape (B, {k}) matching users (B,), got {tuple(banners.shape)} "
                f"for users {tuple(users.shape)}"
            )
        if len(banners) and (banners.min() < 0 or banners.max() >= self.n_products):
            raise ValueError(
                f"banners: product ids must be in [0, {self.n_products}), "
                f"got {banners.min()}..{banners.max()}"
            )
        if (banners.sort(dim=1).values.diff(dim=1) == 0).any():
            raise ValueError("banners: a banner shows the same product twice; products must be distinct")
        if len(users) and (users.min() < 0 or users.max() >= self.n_users):
            raise ValueError(f"users: ids must be in [0, {self.n_users}), got {users.min()}..{users.max()}")


def random_banners(n: int, n_products: int, generator: torch.Generator, k: int = BANNER_SIZE) -> torch.Tensor:
    """(n, k) banners of k distinct products, uniform over ordered k-tuples (rows with repeats redrawn)."""
    if n_products < k:
        raise ValueError(f"n_products: need at least {k} products for a banner, got {n_products}")
    items = torch.randint(0, n_products, (n, k), generator=generator)
    while True:
        s = items.sort(dim=1).values
        bad = (s[:, 1:] == s[:, :-1]).any(dim=1).nonzero().squeeze(1)
        if len(bad) == 0:
            return items
        items[bad] = torch.randint(0, n_products, (len(bad), k), generator=generator)
