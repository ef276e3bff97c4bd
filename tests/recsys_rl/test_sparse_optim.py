"""The mixed dense/sparse Adam: the item tables' own learning rate and its annealing."""

import torch

from recsys_rl.config import TrainConfig, load_reward
from recsys_rl.learner import Learner
from recsys_rl.policy import BannerPolicy
from recsys_rl.sparse_optim import MixedAdam, sparse_rows, sparse_scores


def big_policy() -> BannerPolicy:
    torch.manual_seed(0)
    return BannerPolicy(3000, 8, 16, candidates=64, full_catalogue_max=1000)


def test_item_tables_take_their_own_learning_rate_and_move_by_it():
    policy = big_policy()
    opt = MixedAdam(policy, policy.sparse_parameters(), lr=1e-3, sparse_lr=1e-2)
    assert [g["lr"] for g in opt.sparse.param_groups] == [1e-2]
    assert [g["lr"] for g in opt.dense.param_groups] == [1e-3]
    before = policy.item_in.weight.detach().clone()
    ids = torch.tensor([[1, 2, 3]])
    policy.item_in(ids).sum().backward()
    opt.step()
    moved = (policy.item_in.weight.detach() - before).abs()
    # Adam's first step moves every touched coordinate by ~lr, untouched rows not at all
    assert torch.allclose(moved[1:4], torch.full_like(moved[1:4], 1e-2), rtol=1e-3)
    assert moved[4:].max() == 0


def test_annealing_scales_each_group_from_its_own_starting_rate():
    policy = big_policy()
    cfg = TrainConfig(lr=1e-3, item_lr=2e-2)
    learner = Learner(policy, policy.frozen_copy(), load_reward("graded"), cfg, seed=0)
    learner.set_progress(0.75)
    assert learner.opt.dense.param_groups[0]["lr"] == 1e-3 * 0.25
    assert learner.opt.sparse.param_groups[0]["lr"] == 2e-2 * 0.25


def test_without_item_lr_the_item_tables_use_lr():
    policy = big_policy()
    cfg = TrainConfig(lr=3e-3, item_lr=None)
    learner = Learner(policy, policy.frozen_copy(), load_reward("graded"), cfg, seed=0)
    assert learner.opt.sparse.param_groups[0]["lr"] == 3e-3


def test_sparse_rows_gradient_equals_coalesced_embedding_gradient():
    # the learner's item rows: duplicates across and within rows; its gradient must be the embedding's
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(50, 4, generator=g, requires_grad=True)
    ids = torch.randint(0, 50, (6, 30), generator=g)
    up = torch.randn(6, 30, 4, generator=g)
    (sparse_rows(weight, ids) * up).sum().backward()
    got, weight.grad = weight.grad.coalesce(), None  # autograd's accumulation drops the flag
    (torch.nn.functional.embedding(ids, weight, sparse=True) * up).sum().backward()
    want = weight.grad.coalesce()
    assert torch.equal(got.indices(), want.indices())
    assert torch.allclose(got.values(), want.values(), rtol=1e-6, atol=1e-6)  # summed in another order
    assert torch.equal(sparse_rows(weight, ids), weight[ids])


def test_sparse_scores_match_the_gathered_bmm_and_its_gradients():
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(40, 6, generator=g, requires_grad=True)
    query = torch.randn(5, 6, generator=g, requires_grad=True)
    ids = torch.stack([torch.randperm(40, generator=g)[:12] for _ in range(5)])  # rows shared across queries
    up = torch.randn(5, 12, generator=g)
    got = sparse_scores(query, weight, ids)
    (got * up).sum().backward()
    gw, gq = weight.grad.coalesce(), query.grad
    weight.grad = query.grad = None
    want = torch.bmm(torch.nn.functional.embedding(ids, weight, sparse=True), query.unsqueeze(2)).squeeze(2)
    (want * up).sum().backward()
    assert torch.equal(got, want)
    assert torch.equal(gw.indices(), weight.grad.coalesce().indices())
    assert torch.allclose(gw.values(), weight.grad.coalesce().values(), atol=1e-5)
    assert torch.allclose(gq, query.grad, atol=1e-5)


def test_gathered_scores_are_the_bmm_bit_for_bit(monkeypatch):
    from recsys_rl import sparse_optim

    monkeypatch.setattr(sparse_optim, "GATHER_ROWS", 3)  # several blocks, the last one ragged
    g = torch.Generator().manual_seed(0)
    w, q = torch.randn(500, 8, generator=g), torch.randn(10, 8, generator=g)
    ids = torch.randint(0, 500, (10, 40), generator=g)
    want = torch.bmm(w[ids], q.unsqueeze(2)).squeeze(2)
    assert torch.equal(sparse_optim.gathered_scores(q, w, ids), want)
