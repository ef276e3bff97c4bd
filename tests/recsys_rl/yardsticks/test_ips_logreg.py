"""The IPS logistic regression against scikit-learn called directly on hand-built examples."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from recsys_rl.config import load_reward
from recsys_rl.records import PAD, ContextBatch
from recsys_rl.rewards import position_rewards
from recsys_rl.yardsticks.ips_logreg import FLOOR, IPSLogisticRegression
from tests.recsys_rl.yardsticks.tiny import HISTORY, ITEMS, VIEWED, N, tiny_logs


def brute_force_examples(scheme):
    """One example per rewarded slot: (bag of context products, shown product, reward / show rate)."""
    rewards = position_rewards(scheme, tiny_logs().outcomes).tolist()
    shown = [sum(j in row for row in ITEMS) / len(ITEMS) for j in range(N)]
    x, y, w = [], [], []
    for r, row in enumerate(ITEMS):
        for slot, item in enumerate(row):
            if rewards[r][slot] > 0:
                bag = [0.0] * N
                for j in [VIEWED[r], *HISTORY[r]]:
                    if j != PAD:
                        bag[j] += 1
                x.append(bag)
                y.append(item)
                w.append(rewards[r][slot] / shown[item])
    w = np.array(w)
    return np.array(x), np.array(y), w / w.mean()


@pytest.mark.parametrize("scheme", ["ctr", "graded"])
def test_scores_are_sklearns_log_probabilities_of_the_ips_weighted_fit(scheme):
    s = load_reward(scheme)
    x, y, w = brute_force_examples(s)
    direct = LogisticRegression(max_iter=200, random_state=0).fit(x, y, sample_weight=w)
    ours = IPSLogisticRegression.fit(tiny_logs(), s, N, seed=0)
    query = ContextBatch(torch.tensor([0, PAD]), torch.tensor([[2, 1, PAD], [PAD, PAD, PAD]]))
    qx = np.zeros((2, N))
    qx[0, [0, 2, 1]] = 1
    expected = direct.predict_log_proba(qx)
    scores = ours.logits(query)
    assert scores.shape == (2, N)
    np.testing.assert_allclose(scores[:, direct.classes_].numpy(), expected, rtol=1e-5, atol=1e-6)
    never = sorted(set(range(N)) - set(direct.classes_.tolist()))
    assert (scores[:, never] == FLOOR).all()
    assert ours.greedy(query, 2)[0].tolist() == direct.classes_[np.argsort(-expected[0])[:2]].tolist()


def test_logs_without_two_rewarded_products_are_refused_naming_the_logs():
    logs = tiny_logs()
    logs.outcomes.clicks.zero_()
    logs.outcomes.units.zero_()
    with pytest.raises(ValueError, match="logs: .*at least two products"):
        IPSLogisticRegression.fit(logs, load_reward("ctr"), N)
