import numpy as np
import pytest

from recsys_rl.ope.estimators import doubly_robust, iips, ips, rips, snips
from recsys_rl.ope.outcome_regression import RewardPredictions

R = np.array([1.0, 0.0, 2.0])
P = np.array([0.2, 0.5, 0.3])


def test_behaviour_propensity_outside_unit_interval_names_argument_and_row():
    with pytest.raises(ValueError, match=r"behaviour_prob: row 1: propensity 0\.0 is not in \(0, 1\]"):
        ips(R, P, np.array([0.1, 0.0, 0.2]))
    with pytest.raises(ValueError, match=r"behaviour_prob: row 2: propensity 1\.5"):
        snips(R, P, np.array([0.1, 0.2, 1.5]))
    with pytest.raises(ValueError, match=r"target_prob: row 0: propensity -0\.1 is not in \[0, 1\]"):
        ips(R, np.array([-0.1, 0.2, 0.2]), P)


def test_nan_inputs_name_argument_and_row():
    with pytest.raises(ValueError, match="rewards: row 2: non-finite"):
        ips(np.array([1.0, 0.0, np.nan]), P, P)
    with pytest.raises(ValueError, match="behaviour_marginals: row 1: NaN propensity"):
        iips(np.ones((2, 2)), np.full((2, 2), 0.5), np.array([[0.5, 0.5], [np.nan, 0.5]]))


def test_length_and_shape_mismatches_are_reported():
    with pytest.raises(ValueError, match="behaviour_prob: shape"):
        ips(R, P, np.array([0.2, 0.5]))
    with pytest.raises(ValueError, match="target_prob: has 3 rows but rewards has 4"):
        ips(np.ones(4), P, P)
    with pytest.raises(ValueError, match="target_prefix_probs: shape"):
        rips(np.ones((3, 5)), np.full((3, 4), 0.5), np.full((3, 4), 0.5))
    with pytest.raises(ValueError, match="rewards: expected a 1-d array"):
        ips(np.ones((3, 1)), P, P)
    with pytest.raises(ValueError, match="predictions.target: has 3 rows but position_rewards has 2"):
        q = RewardPredictions(logged=np.zeros((2, 2)), target=np.zeros(3))
        doubly_robust(np.ones((2, 2)), np.full((2, 2), 0.5), np.full((2, 2), 0.5), q)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="clip: must be a positive"):
        ips(R, P, P, clip=0.0)
    with pytest.raises(ValueError, match="ci: must be 'normal' or 'bootstrap'"):
        ips(R, P, P, ci="wald")
    with pytest.raises(ValueError, match="need at least 2 rows"):
        ips(np.ones(1), np.ones(1), np.ones(1))
