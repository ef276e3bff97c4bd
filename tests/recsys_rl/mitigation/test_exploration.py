import math

import torch

from recsys_rl.mitigation.exploration import log_uniform, uniform_banners


def test_uniform_banners_hold_distinct_products_and_cover_the_catalogue():
    b = uniform_banners(2000, 10, 3, torch.Generator().manual_seed(0))
    assert b.shape == (2000, 3)
    assert (b.sort(1).values.diff(1) != 0).all()
    counts = torch.bincount(b.view(-1), minlength=10).float()
    assert (counts / counts.sum() - 0.1).abs().max() < 0.02


def test_log_uniform_is_one_over_the_ordered_banners():
    assert math.isclose(math.exp(log_uniform(5, 3)), 1 / (5 * 4 * 3))
