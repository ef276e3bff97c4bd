"""Preference examples built from logged banners and the graded reward scheme."""

from __future__ import annotations

import torch

from recsys_rl.config import load_reward
from recsys_rl.preference.data import context_pairs, in_banner, unpaired
from recsys_rl.records import BannerBatch, ContextBatch, LoggedBatch, OutcomeBatch

GRADED = load_reward("graded")


def logs(viewed, items, clicks, units) -> LoggedBatch:
    items = torch.tensor(items)
    n = len(items)
    clicks, units = torch.tensor(clicks, dtype=torch.float), torch.tensor(units, dtype=torch.float)
    return LoggedBatch(
        ContextBatch(torch.tensor(viewed), torch.full((n, 2), -1)),
        BannerBatch(items, torch.zeros(n)),
        OutcomeBatch(clicks, units, units * 10),
    )


def test_in_banner_prefers_the_higher_grade_and_weights_each_negative_by_its_examination():
    batch = logs([0, 1], [[5, 6, 7], [8, 9, 10]], [[1, 1, 0], [0, 0, 0]], [[1, 0, 0], [0, 0, 0]])
    prefs = in_banner(batch, GRADED, torch.tensor([1.0, 0.5, 0.25]))
    # banner 0: product 5 was bought (grade 6), 6 clicked (grade 1), 7 ignored; banner 1 gives nothing
    assert prefs.rows.tolist() == [0, 0] and prefs.chosen.tolist() == [5, 6]
    assert prefs.examined.tolist() == [[0.0, 0.5, 0.25], [0.0, 0.0, 0.25]]


def test_context_pairs_join_banners_of_one_viewed_product_with_different_grades():
    batch = logs(
        [3, 3, 4, 4],
        [[1, 2], [2, 1], [1, 2], [2, 1]],
        [[1, 0], [0, 0], [0, 0], [0, 0]],
        [[2, 0], [0] * 2, [0] * 2, [0] * 2],
    )
    pairs = context_pairs(batch, GRADED, rounds=3, seed=0)
    assert len(pairs) == 3  # only the two banners of product 3 differ, once per round
    assert set(pairs.chosen.tolist()) == {0} and set(pairs.rejected.tolist()) == {1}
    assert pairs.grade_gap.tolist() == [9.0] * 3  # click 1 + purchase 5 + multi 3


def test_unpaired_marks_rewarded_banners_desirable():
    batch = logs([0, 1], [[1, 2], [3, 4]], [[0, 1], [0, 0]], [[0, 0], [0, 0]])
    assert unpaired(batch, GRADED).desirable.tolist() == [True, False]
