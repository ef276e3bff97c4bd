import math

import pytest
import torch

from recsys_rl.audit.merit import exposure_per_merit, merit


def test_merit_is_the_mean_value_per_show():
    items = torch.tensor([[0, 1], [0, 2]])
    value = torch.tensor([[1.0, 3.0], [3.0, 1.0]])
    m = merit(items, value, 4)
    assert m[:3].tolist() == pytest.approx([2.0, 3.0, 1.0])
    assert math.isnan(m[3])


def test_exposure_in_proportion_to_merit_reads_one():
    m = torch.tensor([2.0, 1.0, 1.0, float("nan")])
    head = torch.tensor([True, False, False, False])
    assert exposure_per_merit(torch.tensor([0.5, 0.25, 0.25, 0.0]), m, head) == pytest.approx(1.0)
    # the head holds 80% of exposure for 50% of merit: over-exposed by 1.6
    assert exposure_per_merit(torch.tensor([0.8, 0.1, 0.1, 0.0]), m, head) == pytest.approx(1.6)
