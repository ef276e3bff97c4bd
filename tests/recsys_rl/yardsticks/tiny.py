"""A tiny hand-made log (6 products, banners of 2) the classics are checked against by brute force."""

import torch

from recsys_rl.records import PAD, BannerBatch, ContextBatch, LoggedBatch, OutcomeBatch

N, K = 6, 2
VIEWED = [0, 1, 0, 2, PAD, 3, 0, 1]
HISTORY = [
    [1, 2, PAD],
    [0, PAD, PAD],
    [3, 1, 2],
    [PAD, PAD, PAD],
    [4, 0, PAD],
    [2, 3, PAD],
    [5, 1, 4],
    [2, 0, 3],
]
ITEMS = [[3, 4], [2, 5], [1, 4], [0, 5], [3, 2], [4, 1], [2, 3], [5, 0]]
CLICKS = [[1, 0], [1, 1], [0, 1], [1, 0], [0, 0], [1, 0], [0, 1], [1, 1]]
UNITS = [[1, 0], [0, 2], [0, 0], [1, 0], [0, 0], [0, 0], [0, 1], [1, 0]]


def tiny_logs() -> LoggedBatch:
    items = torch.tensor(ITEMS)
    units = torch.tensor(UNITS, dtype=torch.float32)
    return LoggedBatch(
        ContextBatch(torch.tensor(VIEWED), torch.tensor(HISTORY)),
        BannerBatch(items, torch.zeros(len(items))),
        OutcomeBatch(torch.tensor(CLICKS, dtype=torch.float32), units, units * 10.0),
    )


def visit(row: int) -> set[int]:
    """The distinct products of one logged impression: context plus clicked banner products."""
    ctx = {VIEWED[row], *HISTORY[row]} - {PAD}
    return ctx | {i for i, c in zip(ITEMS[row], CLICKS[row], strict=True) if c}
