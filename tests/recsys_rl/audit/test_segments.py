import pytest
import torch

from recsys_rl.audit.segments import segment_values, segments
from recsys_rl.records import PAD


def test_segments_split_by_history_length_and_by_user_group():
    history = torch.tensor([[PAD, PAD, PAD], [1, PAD, PAD], [1, 2, PAD], [1, 2, 3]])
    users = torch.tensor([0, 1, 2, 3])
    s = segments(history, users, {"price_sensitive": torch.tensor([True, False, True, False])})
    assert s["empty_history"].tolist() == [True, False, False, False]
    assert s["light_buyers"].tolist() == [False, True, True, False]  # median length of 1, 2, 3 is 2
    assert s["heavy_buyers"].tolist() == [False, False, False, True]
    assert s["price_sensitive"].tolist() == [True, False, True, False]
    assert s["not_price_sensitive"].tolist() == [False, True, False, True]


def test_segment_gap_closed_shows_who_gains_and_who_pays():
    masks = {"a": torch.tensor([True, True, False]), "b": torch.tensor([False, False, True])}
    value = torch.tensor([2.0, 2.0, 0.0])
    ref = torch.tensor([1.0, 1.0, 1.0])
    oracle = torch.tensor([3.0, 3.0, 2.0])
    out = segment_values(masks, value, ref, oracle)
    assert out["segment_a_gap_closed"] == pytest.approx(0.5)
    assert out["segment_b_gap_closed"] == pytest.approx(-1.0)
    assert out["segment_b_value"] == pytest.approx(0.0)
