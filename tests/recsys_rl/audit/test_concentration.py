import pytest
import torch

from recsys_rl.audit.concentration import coverage, gini, lorenz, tail_share


def test_gini_of_equal_exposure_is_zero_and_of_one_product_is_n_minus_1_over_n():
    assert gini(torch.ones(8)) == pytest.approx(0.0)
    assert gini(torch.tensor([0.0, 0.0, 0.0, 5.0])) == pytest.approx(3 / 4)


def test_gini_matches_the_mean_absolute_difference_formula():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])  # sum |xi - xj| over ordered pairs = 20; 20 / (2 * 16 * 2.5)
    assert gini(x) == pytest.approx(20 / (2 * 16 * 2.5))


def test_lorenz_curve_starts_at_zero_ends_at_one_poorest_first():
    c = lorenz(torch.tensor([3.0, 1.0]))
    assert c.tolist() == pytest.approx([0.0, 0.25, 1.0])


def test_coverage_and_tail_share():
    x = torch.tensor([6.0, 2.0, 2.0, 0.0, 0.0])
    head = torch.tensor([True, False, False, False, False])
    assert coverage(x) == pytest.approx(3 / 5)
    assert tail_share(x, head) == pytest.approx(0.4)
