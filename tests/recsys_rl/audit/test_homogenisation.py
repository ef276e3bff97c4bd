import pytest
import torch

from recsys_rl.audit.homogenisation import jaccard, mean_jaccard


def test_jaccard_by_hand():
    a = torch.tensor([[0, 1, 2], [0, 1, 2]])
    b = torch.tensor([[2, 1, 0], [2, 3, 4]])
    assert jaccard(a, b).tolist() == pytest.approx([1.0, 1 / 5])


def test_mean_jaccard_over_all_pairs_of_different_users():
    banners = torch.tensor([[0, 1], [0, 2], [3, 4]])  # pairs: 1/3, 0, 0
    assert mean_jaccard(banners) == pytest.approx(1 / 9)


def test_sampled_pairs_never_pair_a_user_with_itself():
    banners = torch.arange(40).view(20, 2)  # all disjoint: any self-pair would show as 1
    g = torch.Generator().manual_seed(0)
    assert mean_jaccard(banners, g, max_pairs=50) == 0.0
