import math

import numpy as np
import pytest

from recsys_rl.ope.estimate import bootstrap_ci, effective_sample_size, normal_ci
from recsys_rl.ope.estimators import direct_method, doubly_robust, iips, ips, rips, snips
from recsys_rl.ope.outcome_regression import RewardPredictions

# Whole-banner case: w = pi/mu = [0.2/0.1, 0.1/0.2, 0.3/0.3, 0.05/0.1] = [2, 0.5, 1, 0.5] (mean 1).
R = np.array([1.0, 0.0, 2.0, 1.0])
PI = np.array([0.2, 0.1, 0.3, 0.05])
MU = np.array([0.1, 0.2, 0.3, 0.1])

# Per-position case, n=2, K=2.
POS_R = np.array([[1.0, 0.0], [0.0, 1.0]])
PI_M = np.array([[0.5, 0.2], [0.1, 0.4]])
MU_M = np.array([[0.25, 0.2], [0.2, 0.1]])  # w = [[2, 1], [0.5, 4]]


def test_ips_matches_hand_computation():
    est = ips(R, PI, MU)
    # w*r = [2, 0, 2, 0.5] -> mean 4.5/4 = 1.125
    assert est.value == pytest.approx(1.125)
    # deviations 0.875, -1.125, 0.875, -0.625; squares sum 3.1875; var = 3.1875/3; se = sqrt(var/4)
    assert est.std_err == pytest.approx(math.sqrt(3.1875 / 3 / 4))
    assert (est.ci_low, est.ci_high) == pytest.approx(
        (1.125 - 1.959964 * est.std_err, 1.125 + 1.959964 * est.std_err)
    )
    # ESS = (sum w)^2 / sum w^2 = 16 / 5.5
    assert est.ess == pytest.approx(16 / 5.5)
    assert est.max_weight == 2.0
    assert est.n == 4 and est.name == "IPS"


def test_snips_matches_hand_computation_with_delta_method_se():
    pi = np.array([0.2, 0.1, 0.3, 0.1])  # w = [2, 0.5, 1, 1]
    est = snips(R, pi, MU)
    # sum w r = 2 + 0 + 2 + 1 = 5; sum w = 4.5
    v = 5 / 4.5
    assert est.value == pytest.approx(v)
    # se = sd(w (r - v)) / (sqrt(n) * mean w)
    resid = np.array([2 * (1 - v), 0.5 * (0 - v), 1 * (2 - v), 1 * (1 - v)])
    assert est.std_err == pytest.approx(math.sqrt((resid**2).sum() / 3) / (2 * 1.125))


def test_snips_equals_ips_when_weights_average_to_one():
    assert snips(R, PI, MU).value == pytest.approx(ips(R, PI, MU).value)
    # and its delta-method se: w (r - 1.125) = [-0.25, -0.5625, 0.875, -0.0625], squares sum 1.1484375
    assert snips(R, PI, MU).std_err == pytest.approx(math.sqrt(1.1484375 / 3 / 4))


def test_clipping_bounds_the_largest_weight():
    est = ips(R, PI, MU, clip=1.5)
    # w = [1.5, 0.5, 1, 0.5]; w*r = [1.5, 0, 2, 0.5] -> 1.0
    assert est.max_weight == 1.5
    assert est.value == pytest.approx(1.0)
    assert est.name == "IPS(clip=1.5)"
    assert iips(POS_R, PI_M, MU_M, clip=3.0).max_weight == 3.0
    assert rips(POS_R, PI_M, MU_M, clip=0.7).max_weight == 0.7


def test_iips_matches_hand_computation():
    est = iips(POS_R, PI_M, MU_M)
    # row 0: 2*1 + 1*0 = 2; row 1: 0.5*0 + 4*1 = 4; mean 3; sd([2, 4]) = sqrt(2); se = sqrt(2)/sqrt(2) = 1
    assert est.value == pytest.approx(3.0)
    assert est.std_err == pytest.approx(1.0)
    # per-position ESS: col 0 w = [2, .5] -> 6.25/4.25; col 1 w = [1, 4] -> 25/17; min
    assert est.ess == pytest.approx(min(6.25 / 4.25, 25 / 17))
    assert est.max_weight == 4.0


def test_rips_matches_hand_computation():
    pi_prefix = np.array([[0.5, 0.1], [0.1, 0.02]])
    mu_prefix = np.array([[0.25, 0.1], [0.2, 0.01]])  # w = [[2, 1], [0.5, 2]]
    est = rips(POS_R, pi_prefix, mu_prefix)
    # row 0: 2*1 + 1*0 = 2; row 1: 0.5*0 + 2*1 = 2
    assert est.value == pytest.approx(2.0)
    assert est.std_err == pytest.approx(0.0)
    assert est.max_weight == 2.0


def test_direct_method_is_the_mean_model_value():
    est = direct_method(RewardPredictions(logged=np.zeros((3, 2)), target=np.array([1.0, 2.0, 3.0])))
    assert est.value == pytest.approx(2.0)
    assert est.std_err == pytest.approx(1 / math.sqrt(3))  # sd = 1
    assert est.ess == 3 and est.max_weight == 1.0


def test_doubly_robust_matches_hand_computation():
    q = RewardPredictions(logged=np.full((2, 2), 0.5), target=np.array([1.0, 0.8]))
    est = doubly_robust(POS_R, PI_M, MU_M, q)
    # row 0: 1.0 + 2*(1-.5) + 1*(0-.5) = 1.5; row 1: 0.8 + 0.5*(0-.5) + 4*(1-.5) = 2.55
    assert est.value == pytest.approx((1.5 + 2.55) / 2)
    assert est.max_weight == 4.0


def test_doubly_robust_reduces_to_iips_with_a_zero_model_and_to_dm_with_a_perfect_one():
    zero = RewardPredictions(logged=np.zeros((2, 2)), target=np.zeros(2))
    assert doubly_robust(POS_R, PI_M, MU_M, zero).value == pytest.approx(iips(POS_R, PI_M, MU_M).value)
    exact = RewardPredictions(logged=POS_R, target=np.array([0.3, 0.9]))
    assert doubly_robust(POS_R, PI_M, MU_M, exact).value == pytest.approx(0.6)


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    r = rng.binomial(1, 0.3, 400).astype(float)
    mu = rng.uniform(0.2, 1.0, 400)
    pi = np.clip(mu * rng.uniform(0.5, 1.5, 400), 0, 1)
    a = ips(r, pi, mu, ci="bootstrap", seed=3)
    b = ips(r, pi, mu, ci="bootstrap", seed=3)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert a.ci_low < a.value < a.ci_high
    # percentile bootstrap of a mean agrees with the normal interval to within a few percent of its width
    n = ips(r, pi, mu)
    width = n.ci_high - n.ci_low
    assert abs(a.ci_low - n.ci_low) < 0.15 * width and abs(a.ci_high - n.ci_high) < 0.15 * width
    s = snips(r, pi, mu, ci="bootstrap", n_boot=200, seed=1)
    assert s.ci_low < s.value < s.ci_high


def test_bootstrap_ci_of_constant_terms_is_a_point():
    assert bootstrap_ci(np.full(10, 2.0), n_boot=50, seed=0) == pytest.approx((2.0, 2.0))


def test_ci_helpers_and_ess():
    assert normal_ci(1.0, 0.5) == pytest.approx((1.0 - 0.98, 1.0 + 0.98), abs=1e-4)
    assert effective_sample_size(np.ones(7)) == pytest.approx(7.0)
    assert effective_sample_size(np.array([10.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_sample_size(np.zeros(3)) == 0.0


def test_target_probability_zero_is_allowed_but_snips_needs_some_weight():
    assert ips(R, np.zeros(4), MU).value == 0.0
    with pytest.raises(ValueError, match="every importance weight is 0"):
        snips(R, np.zeros(4), MU)
