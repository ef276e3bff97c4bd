"""Contexts: well-formed, drawn from the user's consideration set, and informative about taste."""

import torch

from recsys_rl.records import HISTORY_LEN, PAD


def _contexts(sim, n=20_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    users = sim.sample_users(n, g)
    return users, sim.contexts(users, g)


def test_viewed_never_in_history_and_history_has_no_repeats(sim):
    _, ctx = _contexts(sim)
    assert not (ctx.history == ctx.viewed[:, None]).any()
    h = torch.where(ctx.history == PAD, -1 - torch.arange(HISTORY_LEN), ctx.history)  # distinct pads
    assert (h.sort(1).values.diff(dim=1) != 0).all()


def test_pad_only_at_end_and_lengths_within_bounds(sim):
    _, ctx = _contexts(sim)
    mask = ctx.history_mask
    assert not (mask[:, 1:] & ~mask[:, :-1]).any()
    lengths = mask.sum(1)
    assert lengths.min() == sim.cfg.min_history and lengths.max() == HISTORY_LEN
    counts = torch.bincount(lengths - sim.cfg.min_history).float()
    assert counts.min() > 0.8 * counts.mean()  # uniform over [min_history, HISTORY_LEN]


def test_context_products_come_from_the_users_consideration_set(sim):
    users, ctx = _contexts(sim, n=2000)
    cons = sim.population.consider_items[users]
    assert (cons == ctx.viewed[:, None]).any(1).all()
    in_set = (ctx.history[:, :, None] == cons[:, None, :]).any(2)
    assert in_set[ctx.history_mask].all()


def test_context_reveals_taste(sim):
    users, ctx = _contexts(sim, n=5000)
    taste = sim.population.taste[users]
    safe = ctx.history.clamp(min=0)
    aff = torch.einsum("bhd,bd->bh", sim.catalogue.vectors[safe], taste)
    hist_aff = aff[ctx.history_mask].mean()
    random_aff = (sim.catalogue.vectors @ taste.T).mean()
    assert hist_aff > random_aff + 0.4
    viewed_aff = (sim.catalogue.vectors[ctx.viewed] * taste).sum(1).mean()
    assert viewed_aff > random_aff + 0.4


def test_higher_affinity_candidates_are_drawn_more_often(sim):
    users = torch.zeros(20_000, dtype=torch.long)
    ctx = sim.contexts(users, torch.Generator().manual_seed(1))
    cons = sim.population.consider_items[0]
    counts = (ctx.viewed[:, None] == cons).sum(0).float()
    probs = torch.softmax(sim.population.consider_logits[0], 0)
    se = (probs * (1 - probs) / 20_000).sqrt()
    assert ((counts / 20_000 - probs).abs() <= 5 * se + 1e-4).all()
