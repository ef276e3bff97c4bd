import pytest
import torch

from recsys_rl.mitigation.planted import PopularityBoosted, popularity_boost
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import ContextBatch


def test_the_boost_is_delta_times_standardised_log_popularity():
    pop = torch.tensor([0.1, 0.2, 0.3, 0.4])
    z = popularity_boost(pop)
    assert z.mean().item() == pytest.approx(0.0, abs=1e-6) and z.std().item() == pytest.approx(1.0)
    torch.manual_seed(0)
    policy = BannerPolicy(4, embed_dim=4, hidden_dim=8, candidates=0, banner_size=2).frozen_copy()
    ctx = ContextBatch(torch.tensor([0, 1]), torch.zeros(2, 1, dtype=torch.long))
    boosted = PopularityBoosted(policy, pop, 2.0)
    assert torch.allclose(boosted.logits(ctx) - policy.logits(ctx), 2.0 * z.expand(2, 4), atol=1e-5)
