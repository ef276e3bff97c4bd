import itertools

import pytest
import torch

from recsys_rl.audit.exposure import banner_exposure, served_banners
from recsys_rl.records import ContextBatch


def exact_exposure(logits: torch.Tensor, examination: torch.Tensor) -> torch.Tensor:
    """(N,) exposure by enumerating every ordered banner's Plackett-Luce probability, averaged over rows."""
    n, k = logits.shape[1], len(examination)
    out = torch.zeros(n, dtype=torch.float64)
    for row in logits.double():
        w = row.exp()
        for banner in itertools.permutations(range(n), k):
            p, left = 1.0, w.sum()
            for j in banner:
                p *= w[j] / left
                left = left - w[j]
            for pos, j in enumerate(banner):
                out[j] += p * examination[pos]
    return out / len(logits)


def test_banner_exposure_weights_each_position_by_its_examination():
    exam = torch.tensor([1.0, 0.5])
    e = banner_exposure(torch.tensor([[0, 1], [1, 2]]), exam, 4)
    assert e.tolist() == pytest.approx([0.5, 0.75, 0.25, 0.0])


def test_served_exposure_matches_enumeration_on_a_tiny_world():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5], [0.0, 0.0, 3.0, 1.0, -2.0]])
    exam = torch.tensor([1.0, 0.6, 0.3])
    contexts = ContextBatch(torch.tensor([0, 1]), torch.zeros(2, 1, dtype=torch.long))

    def scorer(ctx):
        return logits[ctx.viewed]

    g = torch.Generator().manual_seed(0)
    rows, banners = served_banners(scorer, contexts, 3, 20_000, g, 5)
    assert rows.shape == (40_000,) and banners.shape == (40_000, 3)
    sampled = banner_exposure(banners, exam, 5)
    assert sampled.tolist() == pytest.approx(exact_exposure(logits, exam).tolist(), abs=0.01)
