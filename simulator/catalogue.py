"""The product catalogue: latent vectors, categories, prices, click appeal and purchase quality.

Products cluster around category centres so that a user's taste (near one centre) makes a coherent
neighbourhood of products attractive. A share of products is clickbait (high appeal, low quality):
they draw clicks but rarely sell, which is what lets a click-only reward be gamed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from recsys_rl.config import SimConfig

CATEGORY_ZIPF_EXPONENT = 0.8


@dataclass
class Catalogue:
    """N products in a d-dimensional latent space, C categories.

    centres: (C, d) unit category centres; category_weights: (C,) popularity of each category (sums to 1);
    category: (N,) long; vectors: (N, d) unit product vectors; log_price: (N,); prices: (N,) = exp(log_price);
    appeal: (N,) click-logit offset; quality: (N,) purchase-logit offset; is_clickbait: (N,) bool.
    """

    centres: torch.Tensor
    category_weights: torch.Tensor
    category: torch.Tensor
    vectors: torch.Tensor
    log_price: torch.Tensor
    prices: torch.Tensor
    appeal: torch.Tensor
    quality: torch.Tensor
    is_clickbait: torch.Tensor

    @property
    def n_products(self) -> int:
        return self.vectors.shape[0]


def category_weights(n_categories: int) -> torch.Tensor:
    """(C,) Zipf-like category popularity, w_c proportional to 1 / (c + 1)^0.8."""
    w = 1.0 / torch.arange(1, n_categories + 1, dtype=torch.float32) ** CATEGORY_ZIPF_EXPONENT
    return w / w.sum()


def build_catalogue(cfg: SimConfig, generator: torch.Generator) -> Catalogue:
    """Draw the catalogue from ``generator`` (the draw order is part of the seeded contract)."""
    n, c, d = cfg.n_products, cfg.n_categories, cfg.latent_dim
    centres = F.normalize(torch.randn(c, d, generator=generator), dim=-1)
    weights = category_weights(c)
    category = torch.multinomial(weights, n, replacement=True, generator=generator)
    noise = torch.randn(n, d, generator=generator) / math.sqrt(d)
    vectors = F.normalize(centres[category] + cfg.category_spread * noise, dim=-1)

    cat_mean = cfg.price_log_mean + cfg.price_log_std_between * torch.randn(c, generator=generator)
    log_price = cat_mean[category] + cfg.price_log_std_within * torch.randn(n, generator=generator)

    appeal = cfg.appeal_std * torch.randn(n, generator=generator)
    quality = cfg.quality_std * torch.randn(n, generator=generator)
    n_bait = round(cfg.clickbait_share * n)
    is_clickbait = torch.zeros(n, dtype=torch.bool)
    is_clickbait[torch.randperm(n, generator=generator)[:n_bait]] = True
    appeal = appeal + cfg.clickbait_appeal_boost * is_clickbait
    quality = quality - cfg.clickbait_quality_penalty * is_clickbait

    return Catalogue(
        centres=centres,
        category_weights=weights,
        category=category,
        vectors=vectors,
        log_price=log_price,
        prices=log_price.exp(),
        appeal=appeal,
        quality=quality,
        is_clickbait=is_clickbait,
    )
