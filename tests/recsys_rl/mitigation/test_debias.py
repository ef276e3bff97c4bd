import pytest
import torch

from recsys_rl.mitigation.debias import exposure_weights


def test_clicks_on_rarely_exposed_products_weigh_more_and_weights_average_one():
    exposure = torch.tensor([4.0, 1.0, 1.0, 0.0])  # mean over exposed products: 2
    items = torch.tensor([[0, 1], [2, 0]])
    clicks = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    w = exposure_weights(items, clicks, exposure, clip=10.0)
    raw = torch.tensor([[0.5, 2.0], [2.0, 0.5]])
    assert torch.allclose(w, raw / 1.25)  # mean of the clicked raw weights: 1.25
    assert w[clicks > 0].mean().item() == pytest.approx(1.0)


def test_weights_are_clipped():
    exposure = torch.tensor([100.0, 1.0])
    w = exposure_weights(torch.tensor([[0, 1]]), torch.tensor([[1.0, 1.0]]), exposure, clip=2.0)
    assert (w[0, 1] / w[0, 0]).item() == pytest.approx(2.0 / 0.505)  # 50.5 clipped to 2; 0.505 kept
