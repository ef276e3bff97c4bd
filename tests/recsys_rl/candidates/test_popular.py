"""Popular products against a brute-force count."""

import torch

from recsys_rl.candidates.popular import engagement_counts, top_popular
from tests.recsys_rl.candidates.world import N, logs


def test_engagement_counts_and_the_popular_list_match_a_loop_over_the_logs():
    lg = logs()
    want = torch.zeros(N, dtype=torch.float64)
    for r in range(len(lg.banners.items)):
        for k, j in enumerate(lg.banners.items[r].tolist()):
            want[j] += float(lg.outcomes.clicks[r, k] + lg.outcomes.units[r, k])
    got = engagement_counts(lg, N)
    assert torch.allclose(got, want)
    ranked = sorted((j for j in range(N) if want[j] > 0), key=lambda j: (-float(want[j]), j))
    assert top_popular(got, 5).tolist() == (ranked + [-1] * 5)[:5]
