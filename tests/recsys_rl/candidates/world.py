"""A tiny logged world shared by the source tests: 12 products in 3 categories, a few log rows."""

import torch

from recsys_rl.records import PAD, BannerBatch, ContextBatch, LoggedBatch, OutcomeBatch

N = 12
CATEGORY = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])


def logs(rows: int = 40, seed: int = 0) -> LoggedBatch:
    g = torch.Generator().manual_seed(seed)
    viewed = torch.randint(0, N, (rows,), generator=g)
    viewed[::5] = PAD
    history = torch.randint(0, N, (rows, 4), generator=g)
    history[:, 2:][torch.rand(rows, 2, generator=g) < 0.5] = PAD
    items = torch.stack([torch.randperm(N, generator=g)[:3] for _ in range(rows)])
    clicks = (torch.rand(rows, 3, generator=g) < 0.4).float()
    units = clicks * torch.randint(0, 3, (rows, 3), generator=g).float()
    return LoggedBatch(
        ContextBatch(viewed, history),
        BannerBatch(items, torch.zeros(rows)),
        OutcomeBatch(clicks, units, units),
    )


def own(ctx: ContextBatch, row: int) -> list[int]:
    """The context's products of one row, PAD left out, in slot order."""
    return [int(x) for x in [ctx.viewed[row], *ctx.history[row]] if x >= 0]
