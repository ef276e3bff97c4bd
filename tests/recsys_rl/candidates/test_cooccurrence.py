"""Co-occurrence neighbours against a brute-force count over the log rows."""

from collections import Counter

import torch

from recsys_rl.candidates.cooccurrence import build_cooccurrence, cooccurrence_candidates
from recsys_rl.records import ContextBatch
from tests.recsys_rl.candidates.world import N, logs, own


def brute_counts(lg) -> Counter:
    c: Counter = Counter()
    for r in range(len(lg.contexts.viewed)):
        anchors = own(lg.contexts, r)
        for a in anchors:
            for k, b in enumerate(lg.banners.items[r].tolist()):
                w = float(lg.outcomes.clicks[r, k] + lg.outcomes.units[r, k])
                if a != b and w > 0:
                    c[a, b] += w
            for b in anchors:
                if a != b:
                    c[a, b] += 1.0
    return c


def test_neighbour_table_is_the_brute_force_top_n_by_count_ties_by_id():
    lg = logs()
    counts = brute_counts(lg)
    table = build_cooccurrence(lg, N, 4)
    for a in range(N):
        ranked = sorted((b for (x, b) in counts if x == a), key=lambda b: (-counts[a, b], b))[:4]
        assert table[a].tolist() == ranked + [-1] * (4 - len(ranked))


def test_per_context_lists_interleave_the_anchors_by_rank_and_skip_pads():
    table = torch.tensor([[1, 2], [3, -1], [0, 1], [-1, -1]])
    ctx = ContextBatch(torch.tensor([0, -1]), torch.tensor([[1, 3], [2, -1]]))
    got = cooccurrence_candidates(table, ctx, 7)
    assert got[0].tolist() == [1, 3, -1, 2, -1, -1, -1]  # ranks 1 of 0, 1, 3; then ranks 2
    assert got[1].tolist() == [-1, 0, -1, -1, 1, -1, -1]
    assert cooccurrence_candidates(table, ctx, 2).shape == (2, 2)
