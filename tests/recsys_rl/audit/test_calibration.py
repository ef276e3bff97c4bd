import math

import pytest
import torch

from recsys_rl.audit.calibration import calibration_kl, category_mix, mean_calibration_kl
from recsys_rl.records import PAD


def test_category_mix_weighted_by_examination():
    cats = torch.tensor([0, 0, 1])
    mix = category_mix(torch.tensor([[0, 2]]), cats, 2, torch.tensor([1.0, 0.5]))
    assert mix[0].tolist() == pytest.approx([2 / 3, 1 / 3])


def test_calibration_kl_by_hand():
    p = torch.tensor([[0.5, 0.5]])
    q = torch.tensor([[1.0, 0.0]])
    a = 0.01
    q_t = [(1 - a) * 1.0 + a * 0.5, a * 0.5]
    want = 0.5 * math.log(0.5 / q_t[0]) + 0.5 * math.log(0.5 / q_t[1])
    assert calibration_kl(p, q, a).item() == pytest.approx(want)


def test_a_banner_with_the_history_mix_is_calibrated():
    cats = torch.tensor([0, 1, 0, 1])
    history = torch.tensor([[0, 1, PAD]])
    banners = torch.tensor([[2, 3]])
    assert mean_calibration_kl(banners, history, cats, torch.tensor([1.0, 1.0])) == pytest.approx(0.0)
