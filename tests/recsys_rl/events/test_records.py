"""Event records validate what the server would otherwise store; ReadBatch.to_logged checks its input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys_rl.events import Feedback, Impression, ReadBatch
from recsys_rl.records import FEEDBACK_SCHEMA, IMPRESSION_SCHEMA
from tests.recsys_rl.events.factories import buy, click, imp


def test_impression_coerces_sequences_and_numpy_scalars():
    i = Impression("a", np.float32(1.5), np.int64(3), 4, [1, 2], np.arange(5), 0.5, math.log(0.5), "v")
    assert i.history == (1, 2) and i.items == (0, 1, 2, 3, 4)
    assert type(i.user_id) is int and type(i.items[0]) is int and i.timestamp == 1.5


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"impression_id": ""}, ValueError, "impression.impression_id: must not be empty"),
        ({"items": ()}, ValueError, r"impression 'imp-x'.items: must be 1 to 10 distinct"),
        ({"items": tuple(range(11))}, ValueError, r"impression 'imp-x'.items: must be 1 to 10 distinct"),
        ({"items": (1, 1, 2, 3, 4)}, ValueError, r"\.items: must be 1 to 10 distinct"),
        ({"history": tuple(range(11))}, ValueError, r"\.history: at most 10 products, got 11"),
        ({"viewed": -2}, ValueError, r"\.viewed: must be >= -1"),  # -1 (PAD): no viewed product
        ({"user_id": 1.5}, TypeError, r"\.user_id: must be an integer"),
        ({"timestamp": float("inf")}, ValueError, r"\.timestamp: must be finite"),
        ({"propensity": 1.5, "log_propensity": 0.0}, ValueError, r"\.propensity: must be in \[0, 1\]"),
        ({"log_propensity": -1.0}, ValueError, r"\.log_propensity: exp\(-1.0\) does not match propensity"),
        ({"policy_version": 3}, TypeError, r"\.policy_version: must be a string"),
    ],
)
def test_impression_rejects_bad_fields_naming_them(change, error, message):
    fields = {
        "impression_id": "imp-x",
        "timestamp": 1.0,
        "user_id": 1,
        "viewed": 2,
        "history": (3,),
        "items": (1, 2, 3, 4, 5),
        "propensity": 0.5,
        "log_propensity": math.log(0.5),
        "policy_version": "v",
    }
    with pytest.raises(error, match=message):
        Impression(**{**fields, **change})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "view"}, r"feedback 'e'.type: must be one of \('click', 'purchase'\)"),
        ({"position": 10}, r"\.position: must be < 10"),
        ({"units": 2}, r"\.units: must be 0 for a click"),
        ({"type": "purchase", "units": 0}, r"\.units: must be >= 1 for a purchase"),
        ({"price": -1.0}, r"\.price: must be >= 0"),
    ],
)
def test_feedback_rejects_bad_fields_naming_them(change, message):
    fields = {
        "event_id": "e",
        "impression_id": "i",
        "timestamp": 1.0,
        "type": "click",
        "product_id": 3,
        "position": 0,
        "units": 0,
        "price": 0.0,
    }
    with pytest.raises(ValueError, match=message):
        Feedback(**{**fields, **change})


def test_to_logged_of_an_empty_batch_has_empty_shapes():
    logged = ReadBatch([], [], 0).to_logged()
    assert logged.contexts.history.shape == (0, 10)
    assert logged.banners.items.shape == (0, 5) and logged.outcomes.revenue.shape == (0, 5)


def test_to_logged_checks_product_ids_against_the_catalogue():
    batch = ReadBatch([imp("a", items=(1, 2, 3, 4, 5)), imp("b", history=(7, 99))], [], 0)
    with pytest.raises(
        ValueError, match=r"impression 'imp-b'.history: product id 99 is outside the catalogue \[0, 50\)"
    ):
        batch.to_logged(n_products=50)
    assert batch.to_logged(n_products=100).contexts.history[1, :3].tolist() == [7, 99, -1]


def test_to_logged_rejects_feedback_that_does_not_match_the_banner():
    a = imp("a")
    wrong = Feedback("e", a.impression_id, 1.0, "click", a.items[0], 3, 0, 0.0)
    with pytest.raises(
        ValueError, match=r"feedback 'e'.product_id: 10 is not at position 3 of impression 'imp-a'"
    ):
        ReadBatch([a], [wrong], 0).to_logged()
    with pytest.raises(ValueError, match=r"feedback 'ev-1'.impression_id: 'imp-other' is not in this batch"):
        ReadBatch([a], [click(1, imp("other"), 0)], 0).to_logged()


def test_to_logged_sums_repeat_purchases_and_keeps_rows_apart():
    a, b = imp("a"), imp("b")
    fb = [buy(1, b, 3, 2, 1.25), buy(2, b, 3, 1, 1.25), click(3, a, 3), click(4, b, 0)]
    out = ReadBatch([a, b], fb, 0).to_logged().outcomes
    assert out.clicks.tolist() == [[0, 0, 0, 1, 0], [1, 0, 0, 1, 0]]
    assert out.units.tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 3, 0]]
    assert out.revenue.tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 3.75, 0]]


def test_records_have_the_fields_of_the_event_schema_in_order():
    assert list(Impression.__slots__) == IMPRESSION_SCHEMA.names
    assert list(Feedback.__slots__) == FEEDBACK_SCHEMA.names
