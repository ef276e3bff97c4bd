"""What a context says about its user: the exact posterior over the population, and E[g(u, j) | x].

The oracle and ``benchmarks/kl_frontier.py``'s true-reward tilt use the user's latent taste, which no
policy sees: a policy maps the *context* (viewed product + purchase history) to a banner. The best any
context-only scorer can know about product j is the posterior expectation of its reward given
examination, E[g(u, j) | x] = sum_u P(u | x) g(u, j). The simulator knows exactly how contexts are drawn
(``simulator.contexts``): one Plackett–Luce (Gumbel-top-(1 + L)) draw over the user's consideration set
with its logits, the first pick the viewed product, the next L the history, L uniform and independent
of the user, users uniform over the population. So the likelihood of a context under user u is the
PL prefix probability of the observed picks,

    P(x | u) = prod_k exp(l_u(i_k)) / (Z_u - sum_{m < k} exp(l_u(i_m))),   Z_u = sum over u's set,

zero if any pick is outside u's set (truncating the history at L marginalises the later picks out),
and P(u | x) is its normalisation over users. Exact for the default worlds; contexts with user
features or a home-page viewed product (PAD) are refused (their likelihood has other terms).

Cost: a dense (U, N) table of context logits and, per block of contexts, (U, C) likelihoods: meant for
the small catalogue's benchmarks, not for large worlds. Shapes: C contexts, U users, N products.
"""

from __future__ import annotations

import math

import torch

from recsys_rl.config import RewardScheme
from recsys_rl.records import PAD, ContextBatch
from simulator.env import Simulator
from simulator.response import reward_given_examination
from simulator.users import Population

MAX_TABLE = 1 << 26
"""Largest users x products table built (256 MB of float32)."""


def _logit_table(pop: Population, n_products: int) -> torch.Tensor:
    """(U, N) each user's context logit per product; -inf outside their consideration set."""
    u = pop.n_users
    if u * n_products > MAX_TABLE:
        raise ValueError(
            f"posterior: {u} users x {n_products} products is above {MAX_TABLE}; small worlds only"
        )
    table = torch.full((u, n_products), -math.inf)
    return table.scatter_(1, pop.consider_items, pop.consider_logits)


def context_log_likelihood(
    pop: Population, n_products: int, ctx: ContextBatch, chunk: int = 64
) -> torch.Tensor:
    """(C, U) log P(x_c | u) of each context under each user (see module doc); -inf where impossible."""
    if ctx.user_features is not None or ctx.user_categories is not None:
        raise ValueError("posterior: contexts with user features are not supported")
    if bool((ctx.viewed == PAD).any()):
        raise ValueError("posterior: home-page contexts (viewed product PAD) are not supported")
    table = _logit_table(pop, n_products)
    log_z = torch.logsumexp(pop.consider_logits, 1)  # (U,)
    picks = torch.cat([ctx.viewed[:, None], ctx.history], 1)  # (C, 1 + L), PAD-padded at the end
    out = []
    for s in range(0, len(ctx), chunk):
        p = picks[s : s + chunk]  # (c, P)
        valid = p != PAD
        lp = table[:, p.clamp_min(0)]  # (U, c, P)
        share = torch.exp(lp - log_z[:, None, None]) * valid  # each pick's share of its user's mass
        before = torch.cumsum(share, 2) - share  # mass already drawn before each pick
        log_denominator = log_z[:, None, None] + torch.log1p(-before.clamp(max=1 - 1e-7))
        terms = torch.where(valid, lp - log_denominator, torch.zeros(()))
        out.append(terms.sum(2).T)  # (c, U)
    return torch.cat(out)


def user_posterior(pop: Population, n_products: int, ctx: ContextBatch) -> torch.Tensor:
    """(C, U) P(u | x_c) under the uniform prior over the population; rows sum to 1."""
    return torch.softmax(context_log_likelihood(pop, n_products, ctx), 1)


@torch.no_grad()
def posterior_reward(
    sim: Simulator, ctx: ContextBatch, scheme: RewardScheme, user_block: int = 2000
) -> torch.Tensor:
    """(C, N) E[g(u, j) | x_c]: the scheme's expected reward of each product given examination, averaged
    over the posterior of the context's user (``simulator.response.reward_given_examination`` per user)."""
    post = user_posterior(sim.population, sim.n_products, ctx)  # (C, U)
    out = torch.zeros(len(ctx), sim.n_products)
    for s in range(0, sim.n_users, user_block):
        users = torch.arange(s, min(sim.n_users, s + user_block))
        out += post[:, users] @ reward_given_examination(sim.catalogue_rates(users), scheme)
    return out
