import torch

from recsys_rl import slate
from recsys_rl.policy import BannerPolicy, load_policy, save_policy
from recsys_rl.records import PAD, ContextBatch


def ctx(viewed, history):
    return ContextBatch(torch.tensor(viewed), torch.tensor(history))


def test_logits_score_the_whole_catalogue_in_one_batch():
    p = BannerPolicy(300, 8, 16)
    c = ctx([1, 2, 3], [[4, 5] + [PAD] * 8] * 3)
    assert p.logits(c).shape == (3, 300)
    assert torch.equal(p.logits(c), p(c.viewed, c.history))


def test_padding_is_ignored_not_treated_as_a_product():
    torch.manual_seed(0)
    p = BannerPolicy(50, 8, 16)
    a = ctx([1], [[4, 5] + [PAD] * 8])
    b = ctx([1], [[4, 5, PAD, PAD] + [PAD] * 6])
    assert torch.allclose(p.logits(a), p.logits(b))
    c = ctx([1], [[4, 5, 6] + [PAD] * 7])
    assert not torch.allclose(p.logits(a), p.logits(c))


def test_sampled_banner_propensity_is_its_exact_log_prob():
    torch.manual_seed(0)
    p = BannerPolicy(40, 8, 16)
    c = ctx([1, 2], [[3] + [PAD] * 9, [PAD] * 10])
    b = p.sample(c, temperature=0.7, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(b.log_prob, slate.log_prob(p.logits(c), b.items, 0.7))
    assert all(len(set(r)) == 5 for r in b.items.tolist())


def test_greedy_is_the_top5_and_reference_copy_is_frozen():
    p = BannerPolicy(40, 8, 16)
    c = ctx([1], [[3] + [PAD] * 9])
    assert torch.equal(p.greedy(c), p.logits(c).topk(5).indices)
    ref = p.frozen_copy()
    assert not any(q.requires_grad for q in ref.parameters())
    assert torch.equal(ref.logits(c), p.logits(c))


def test_save_and_load_round_trip(tmp_path):
    p = BannerPolicy(40, 8, 16)
    save_policy(p, tmp_path / "p.pt")
    q = load_policy(tmp_path / "p.pt")
    c = ctx([1], [[3] + [PAD] * 9])
    assert torch.equal(p.logits(c), q.logits(c))
