"""Same-category neighbours against a brute-force ranking."""

import torch

from recsys_rl.candidates.category import category_candidates, category_top
from recsys_rl.candidates.popular import engagement_counts
from recsys_rl.records import ContextBatch
from tests.recsys_rl.candidates.world import CATEGORY, N, logs


def test_each_category_keeps_its_most_engaged_products_never_an_unengaged_one():
    lg = logs()
    counts = engagement_counts(lg, N)
    table = category_top(CATEGORY, counts, 3)
    for c in range(3):
        members = [j for j in range(N) if CATEGORY[j] == c and counts[j] > 0]
        ranked = sorted(members, key=lambda j: (-float(counts[j]), j))[:3]
        assert table[c].tolist() == ranked + [-1] * (3 - len(ranked))


def test_context_lists_follow_the_categories_of_its_products_viewed_first():
    table = torch.tensor([[0, 1], [4, 5], [8, -1]])
    ctx = ContextBatch(torch.tensor([9, -1]), torch.tensor([[2, 6], [-1, -1]]))
    got = category_candidates(CATEGORY, table, ctx, 6)
    assert got[0].tolist() == [8, 0, 4, -1, 1, 5]
    assert got[1].tolist() == [-1] * 6
