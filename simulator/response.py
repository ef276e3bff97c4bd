"""How users respond to a banner: examination, click, purchase and quantity.

Pure functions over tensors, so sampling and exact expectation share one definition of the physics.
Per shown product j and user u (all broadcastable, typically (B, K)):

    c   = sigmoid(affinity_click * A + appeal + click_bias [+ rho])                        P(click | examined)
    pi  = sigmoid(affinity_purchase * A + quality - s * (log p - mu) + purchase_bias [+ rho])  P(buy | click)
    lam = min(b * exp(-s * (log p - mu)), 5)          extra units ~ Poisson(lam), units = 1 + extra

Examination: "pbm" examines position k with probability position_bias[k], independently.
"cascade" scans in order: position k is reached through continuations Bernoulli(pb[k] / pb[k-1])
(pb[0] for k = 0) and examined only if nothing before it was clicked, so at most one click per banner
and P(examined_k) = pb[k] * prod_{i<k} (1 - c_i).

rho = repeat_interest for the user's repeat-interest favourites (their top ``repeat_interest_items``
considered products, which their contexts also draw more often), 0 otherwise and in the default world.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys_rl.config import RewardScheme, SimConfig
from recsys_rl.records import ExpectedOutcome, OutcomeBatch

MAX_EXTRA_RATE = 5.0


@dataclass
class Rates:
    """Per-(user, product) response rates, all the same shape: click c, purchase-given-click pi,
    extra-units Poisson rate lam, and the unit price."""

    click: torch.Tensor
    purchase: torch.Tensor
    extra: torch.Tensor
    price: torch.Tensor


def rates(
    cfg: SimConfig,
    affinity: torch.Tensor,
    appeal: torch.Tensor,
    quality: torch.Tensor,
    log_price: torch.Tensor,
    price: torch.Tensor,
    sensitivity: torch.Tensor,
    basket: torch.Tensor,
    repeat: torch.Tensor | None = None,
) -> Rates:
    """Response rates from affinities and product/user parameters (all broadcast to one shape).

    repeat: bool, True where the product is one of the user's repeat-interest favourites; both logits
    then gain ``cfg.repeat_interest`` (None: no repeat interest)."""
    price_gap = log_price - cfg.price_log_mean
    click_logit = cfg.affinity_click * affinity + appeal + cfg.click_bias
    purchase_logit = cfg.affinity_purchase * affinity + quality - sensitivity * price_gap + cfg.purchase_bias
    if repeat is not None:
        click_logit = click_logit + cfg.repeat_interest * repeat
        purchase_logit = purchase_logit + cfg.repeat_interest * repeat
    click = torch.sigmoid(click_logit)
    purchase = torch.sigmoid(purchase_logit)
    extra = torch.clamp(basket * torch.exp(-sensitivity * price_gap), max=MAX_EXTRA_RATE)
    return Rates(click, purchase, extra, price)


def examination(click: torch.Tensor, position_bias: torch.Tensor, click_model: str) -> torch.Tensor:
    """(B, K) exact probability that each position is examined. click: (B, K); position_bias: (K,)."""
    if click_model == "pbm":
        return position_bias.expand_as(click)
    if click_model == "cascade":
        no_click_before = torch.cumprod(
            torch.cat([torch.ones_like(click[:, :1]), 1 - click[:, :-1]], dim=1), dim=1
        )
        return position_bias * no_click_before
    raise ValueError(f"click_model: unknown value {click_model!r} (expected 'pbm' or 'cascade')")


def expected(r: Rates, position_bias: torch.Tensor, click_model: str) -> ExpectedOutcome:
    """Exact per-position expectations of a banner, no sampling. All (B, K)."""
    p_click = examination(r.click, position_bias, click_model) * r.click
    p_buy = p_click * r.purchase
    units = p_buy * (1 + r.extra)
    return ExpectedOutcome(
        click=p_click,
        purchase=p_buy,
        multi=p_buy * -torch.expm1(-r.extra),
        units=units,
        revenue=units * r.price,
    )


def sample(
    r: Rates, position_bias: torch.Tensor, click_model: str, generator: torch.Generator
) -> OutcomeBatch:
    """Sampled outcomes (B, K) of banners with rates ``r``; Poisson draws only where a purchase happened."""
    u = torch.rand((3,) + r.click.shape, generator=generator)
    if click_model == "pbm":
        clicks = (u[0] < position_bias) & (u[1] < r.click)
    elif click_model == "cascade":
        continue_p = position_bias / torch.cat([position_bias.new_ones(1), position_bias[:-1]])
        reached = torch.cumprod((u[0] < continue_p).to(torch.uint8), dim=1).bool()
        would_click = reached & (u[1] < r.click)
        clicks = would_click & (torch.cumsum(would_click, dim=1) == 1)
    else:
        raise ValueError(f"click_model: unknown value {click_model!r} (expected 'pbm' or 'cascade')")
    bought = clicks & (u[2] < r.purchase)
    units = bought.to(torch.float32)
    units[bought] += torch.poisson(r.extra[bought], generator=generator)
    return OutcomeBatch(clicks=clicks.to(torch.float32), units=units, revenue=units * r.price)


def reward_given_examination(r: Rates, scheme: RewardScheme) -> torch.Tensor:
    """Expected reward of a product given that its position is examined: the oracle's sort key.

    g = c * (click + pi * (purchase + multi * (1 - e^-lam) + units * (1 + lam) + revenue * price * (1 + lam)))
    """
    units = 1 + r.extra
    per_buy = (
        scheme.purchase
        + scheme.multi_purchase * -torch.expm1(-r.extra)
        + scheme.units * units
        + scheme.revenue * r.price * units
    )
    return r.click * (scheme.click + r.purchase * per_buy)
