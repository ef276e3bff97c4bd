import math

import pytest
import torch

from recsys_rl.audit.popularity import average_popularity, popularity_lift
from recsys_rl.records import PAD


def test_average_popularity_ignores_padding():
    pop = torch.tensor([0.5, 0.3, 0.1, 0.1])
    items = torch.tensor([[0, 1], [2, PAD]])
    assert average_popularity(items, pop).tolist() == pytest.approx([0.4, 0.1])


def test_popularity_lift_by_hand():
    pop = torch.tensor([0.4, 0.3, 0.2, 0.1])
    banners = torch.tensor([[0, 1], [0, 2]])  # ARP: (0.35 + 0.3) / 2 = 0.325
    history = torch.tensor([[2, 3, PAD], [3, PAD, PAD]])  # ARP: (0.15 + 0.1) / 2 = 0.125
    assert popularity_lift(banners, history, pop) == pytest.approx((0.325 - 0.125) / 0.125)


def test_users_without_history_are_left_out_of_the_lift():
    pop = torch.tensor([0.4, 0.3, 0.2, 0.1])
    banners = torch.tensor([[0, 1], [3, 2]])
    history = torch.tensor([[2, PAD], [PAD, PAD]])
    assert popularity_lift(banners, history, pop) == pytest.approx((0.35 - 0.2) / 0.2)
    assert math.isnan(popularity_lift(banners, torch.full((2, 2), PAD), pop))
