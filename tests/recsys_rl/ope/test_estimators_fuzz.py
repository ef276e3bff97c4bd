"""Property tests: the estimators take any arrays (any shape, NaN, inf, negatives, zeros, empty) and
either return an Estimate or raise a ValueError naming the problem — never another exception."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from recsys_rl.ope import Estimate, RewardPredictions, direct_method, doubly_robust, iips, ips, rips, snips

FUZZ = settings(max_examples=120, deadline=None, database=None)
# values near the float64 limit overflow inside the estimate (inf/NaN in the result, not an exception)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
probs = st.floats(min_value=0.0, max_value=1.0) | floats
rows = st.integers(0, 6)
shapes = st.one_of(
    rows.map(lambda n: (n,)), st.tuples(rows, st.integers(0, 5)), st.tuples(rows, st.just(5)), st.just(())
)


def arrays(elements=floats):
    return shapes.flatmap(lambda s: hnp.arrays(np.float64, s, elements=elements))


options = st.fixed_dictionaries(
    {
        "clip": st.none() | floats,
        "ci": st.sampled_from(["normal", "bootstrap", "nope"]),
        "n_boot": st.integers(-1, 20),
        "seed": st.integers(0, 2**32 - 1),
    }
)


def estimate_or_value_error(fn, *args, **kwargs) -> None:
    try:
        out = fn(*args, **kwargs)
    except ValueError as e:
        assert str(e), "ValueError without a message"
        return
    assert isinstance(out, Estimate)


@FUZZ
@given(
    r=arrays(),
    t=arrays(probs),
    b=arrays(probs),
    opts=options,
    estimator=st.sampled_from([ips, snips, iips, rips]),
)
def test_weighted_estimators_raise_only_value_error(r, t, b, opts, estimator):
    estimate_or_value_error(estimator, r, t, b, **opts)


@FUZZ
@given(n=st.integers(0, 6), k=st.integers(1, 5), data=st.data(), opts=options)
def test_well_shaped_inputs_with_bad_values_raise_only_value_error(n, k, data, opts):
    """Same shapes everywhere (so the checks get past shapes to values)."""
    r = data.draw(hnp.arrays(np.float64, (n, k), elements=floats))
    t = data.draw(hnp.arrays(np.float64, (n, k), elements=probs))
    b = data.draw(hnp.arrays(np.float64, (n, k), elements=probs))
    q_log = data.draw(hnp.arrays(np.float64, (n, k), elements=floats))
    q_tgt = data.draw(hnp.arrays(np.float64, (n,), elements=floats))
    estimate_or_value_error(iips, r, t, b, **opts)
    estimate_or_value_error(rips, r, t, b, **opts)
    estimate_or_value_error(ips, r[:, 0], t[:, 0], b[:, 0], **opts)
    estimate_or_value_error(snips, r[:, 0], t[:, 0], b[:, 0], **opts)
    preds = RewardPredictions(q_log, q_tgt)
    estimate_or_value_error(doubly_robust, r, t, b, preds, **opts)
    opts.pop("clip")
    estimate_or_value_error(direct_method, preds, **opts)


@FUZZ
@given(r=arrays(), t=arrays(probs), b=arrays(probs), q_log=arrays(), q_tgt=arrays(), opts=options)
def test_model_based_estimators_raise_only_value_error(r, t, b, q_log, q_tgt, opts):
    preds = RewardPredictions(q_log, q_tgt)
    estimate_or_value_error(doubly_robust, r, t, b, preds, **opts)
    opts.pop("clip")
    estimate_or_value_error(direct_method, preds, **opts)
