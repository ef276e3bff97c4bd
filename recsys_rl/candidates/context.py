"""The context's own products as a candidate source: the viewed product and the purchase history.

What the user is known to like. In a world where re-showing pays (repeat interest) they are the best
candidates there are; where novelty pays the policy learns a negative weight for them. This is the
source the old single context bonus drew on: the bonus is this source plus its one learned feature.
"""

from __future__ import annotations

import torch

from recsys_rl.records import ContextBatch


def context_products(ctx: ContextBatch) -> torch.Tensor:
    """(B, 1 + H) long: the viewed product then the history (most recent first), PAD (-1) where absent."""
    return torch.cat([ctx.viewed.unsqueeze(1), ctx.history], 1)
