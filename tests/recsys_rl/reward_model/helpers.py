"""Tiny worlds and hand-built reward models for the reward-model tests."""

from __future__ import annotations

import torch

from recsys_rl.config import SimConfig
from recsys_rl.records import ContextBatch, LoggedBatch
from recsys_rl.reward_model.model import BannerRewardModel
from simulator import Simulator
from simulator.behaviour import ExploringBehaviour

TINY = SimConfig(n_products=24, n_categories=3, n_users=400, consideration_size=12)


def simulate(sim: Simulator, logits_fn, epsilon: float, n: int, seed: int):
    """(users, LoggedBatch) of n impressions served by an exploring logger, without Parquet."""
    g = torch.Generator().manual_seed(seed)
    users = sim.sample_users(n, g)
    ctx = sim.contexts(users, g)
    banners = ExploringBehaviour(logits_fn, sim.n_products, epsilon).sample(ctx, g)
    return users, LoggedBatch(ctx, banners, sim.respond(users, banners.items, g))


def known_model(
    n_products: int, click_bias: torch.Tensor, exam=(1.0, 0.7, 0.5, 0.4, 0.3)
) -> BannerRewardModel:
    """A reward model with no context dependence: P(click at k) = exam[k] * sigmoid(click_bias[j]), no purchases."""
    m = BannerRewardModel(n_products, embed_dim=4, hidden_dim=8)
    with torch.no_grad():
        m.item_out.zero_()
        m.item_bias.zero_()
        m.item_bias[0] = click_bias
        m.item_bias[1] = -30.0  # never buys
        e = torch.tensor(exam[1:])
        m.exam_logit.copy_(torch.log(e / (1 - e + 1e-12)))
    return m.eval().requires_grad_(False)


def contexts(n: int, n_products: int, seed: int = 0) -> ContextBatch:
    g = torch.Generator().manual_seed(seed)
    viewed = torch.randint(0, n_products, (n,), generator=g)
    history = torch.randint(0, n_products, (n, 10), generator=g)
    return ContextBatch(viewed, history)
