"""Each classic against a brute-force count on a tiny log, and its banner as the policy's greedy."""

import torch

from recsys_rl.config import load_reward
from recsys_rl.records import PAD, ContextBatch
from recsys_rl.yardsticks.covisitation import CoVisitation, covisit_counts
from recsys_rl.yardsticks.popularity import Popularity
from recsys_rl.yardsticks.reshow import ReshowContext
from tests.recsys_rl.yardsticks.tiny import CLICKS, ITEMS, VIEWED, K, N, tiny_logs, visit

QUERY = ContextBatch(torch.tensor([0, PAD, 5]), torch.tensor([[2, 1, PAD], [PAD, PAD, PAD], [1, 5, PAD]]))


def test_popularity_totals_are_each_products_logged_reward_and_its_banner_is_their_top():
    graded = load_reward("graded")
    pop = Popularity.fit(tiny_logs(), load_reward("ctr"), N)
    clicks = [
        sum(c for row, cl in zip(ITEMS, CLICKS, strict=True) for i, c in zip(row, cl, strict=True) if i == j)
        for j in range(N)
    ]
    assert pop.totals.tolist() == clicks
    g = Popularity.fit(tiny_logs(), graded, N).totals
    assert g[3] > g[4] and g[5] > clicks[5]  # purchases add to the clicks under the graded scheme
    banner = pop.greedy(QUERY)
    assert banner.shape == (3, K) and (banner == banner[0]).all()  # the same banner for every context
    assert sorted(clicks[j] for j in banner[0].tolist()) == sorted(clicks)[-K:]


def test_covisitation_counts_distinct_products_sharing_a_visit():
    counts = covisit_counts(tiny_logs(), N).to_dense()
    for i in range(N):
        for j in range(N):
            expected = 0 if i == j else sum(1 for r in range(len(VIEWED)) if {i, j} <= visit(r))
            assert counts[i, j] == expected, (i, j)


def test_covisitation_scores_a_context_by_the_counts_of_its_products():
    logs = tiny_logs()
    pop = Popularity.fit(logs, load_reward("ctr"), N)
    cov = CoVisitation.fit(logs, pop.totals, N)
    scores = cov.logits(QUERY)
    dense = covisit_counts(logs, N).to_dense()
    expected = dense[0] + dense[2] + dense[1]  # context 0: viewed 0, history 2 and 1
    assert torch.equal(scores[0].floor(), expected)
    assert torch.equal(scores[1].argsort(), pop.totals.argsort())  # empty context: popularity order


def test_reshow_puts_the_most_frequent_then_most_recent_context_products_first():
    pop = Popularity.fit(tiny_logs(), load_reward("ctr"), N)
    reshow = ReshowContext(pop)
    assert reshow.greedy(QUERY, 3)[0].tolist() == [0, 2, 1]  # viewed, then history most recent first
    assert reshow.greedy(QUERY, 2)[2].tolist() == [5, 1]  # 5 viewed and bought: twice, so first
    by_popularity = sorted(range(N), key=lambda j: (pop.totals[j].item(), j), reverse=True)
    assert reshow.greedy(QUERY, 3)[1].tolist() == by_popularity[:3]  # no context: most popular (ties: id)
    assert reshow.greedy(QUERY, 5)[0].tolist()[3:] == [j for j in by_popularity if j not in (0, 1, 2)][:2]
