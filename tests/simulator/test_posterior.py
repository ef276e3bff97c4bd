"""The context posterior: a normalised likelihood of how contexts are drawn, checked by enumeration."""

import itertools

import pytest
import torch

from recsys_rl.config import builtin_rewards
from recsys_rl.records import HISTORY_LEN, PAD, ContextBatch
from simulator import Simulator
from simulator.contexts import draw_contexts
from simulator.posterior import context_log_likelihood, posterior_reward, user_posterior
from simulator.response import reward_given_examination
from tests.simulator.worlds import small_config


@pytest.fixture(scope="module")
def tiny() -> Simulator:
    return Simulator(
        small_config(n_products=14, n_categories=3, n_users=40, consideration_size=11, min_history=1)
    )


def _contexts(picks: list[tuple[int, ...]]) -> ContextBatch:
    """Contexts from explicit picks (viewed, history...), the history PAD-padded."""
    p = torch.tensor(picks)
    history = torch.full((len(picks), HISTORY_LEN), PAD)
    history[:, : p.shape[1] - 1] = p[:, 1:]
    return ContextBatch(viewed=p[:, 0].clone(), history=history)


def test_likelihood_sums_to_one_over_every_possible_context(tiny):
    n = tiny.n_products
    ctx = _contexts(list(itertools.permutations(range(n), 3)))  # viewed + 2 history, every ordering
    p = context_log_likelihood(tiny.population, n, ctx).exp()  # (C, U)
    assert torch.allclose(p.sum(0), torch.ones(tiny.n_users), atol=1e-4)


def test_likelihood_matches_the_frequency_of_drawn_contexts(tiny):
    g = torch.Generator().manual_seed(0)
    pop, n, draws = tiny.population, tiny.n_products, 200_000
    ctx = draw_contexts(pop.consider_items, pop.consider_logits, torch.zeros(draws, dtype=torch.long), 1, g)
    pairs = ctx.viewed * n + ctx.history[:, 0]  # viewed + first history pick (the rest marginalised)
    freq = torch.bincount(pairs, minlength=n * n).float() / draws
    every = _contexts(list(itertools.product(range(n), repeat=2)))
    p = context_log_likelihood(pop, n, every)[:, 0].exp()
    p = torch.where(every.viewed == every.history[:, 0], torch.zeros(()), p)  # a product is drawn once
    assert float((freq - p).abs().max()) < 4e-3
    assert abs(float(p.sum()) - 1) < 1e-4


def test_a_pick_outside_a_users_set_rules_that_user_out(tiny):
    pop = tiny.population
    outside = [j for j in range(tiny.n_products) if j not in set(pop.consider_items[0].tolist())][0]
    inside = int(pop.consider_items[0, 0])
    post = user_posterior(pop, tiny.n_products, _contexts([(inside, outside)]))
    assert float(post[0, 0]) == 0.0 and abs(float(post.sum()) - 1) < 1e-5


def test_posterior_reward_is_the_posterior_weighted_reward_and_beats_the_prior(tiny):
    scheme = builtin_rewards()["graded"]
    g = torch.Generator().manual_seed(1)
    users = tiny.sample_users(300, g)
    ctx = tiny.contexts(users, g)
    post = user_posterior(tiny.population, tiny.n_products, ctx)
    assert float(post[torch.arange(300), users].mean()) > 5 / tiny.n_users  # the context is informative
    g_all = reward_given_examination(tiny.catalogue_rates(torch.arange(tiny.n_users)), scheme)  # (U, N)
    assert torch.allclose(posterior_reward(tiny, ctx, scheme, user_block=7), post @ g_all, atol=1e-5)


def test_home_page_contexts_are_refused(tiny):
    ctx = _contexts([(0, 1)])
    ctx.viewed[:] = PAD
    with pytest.raises(ValueError, match="home-page"):
        context_log_likelihood(tiny.population, tiny.n_products, ctx)
