import torch

from recsys_rl.candidates.context import context_products
from recsys_rl.records import ContextBatch


def test_context_products_are_the_viewed_one_then_the_history_pads_kept():
    ctx = ContextBatch(torch.tensor([4, -1]), torch.tensor([[1, 2], [3, -1]]))
    assert context_products(ctx).tolist() == [[4, 1, 2], [-1, 3, -1]]
