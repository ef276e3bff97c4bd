"""Candidate sources and their union: which products the policy scores for a context.

One module per source: the policy's own top-M (``policy_topm``: exact or IVF retrieval), the
context's products (``context``), item-to-item co-occurrence from the logs (``cooccurrence``),
same-category neighbours (``category``), popular products (``popular``); ``sources`` holds the stored
ones for a policy version and ``union`` builds the fixed-size set the Plackett–Luce policy is over.
"""

from recsys_rl.candidates.policy_topm import (
    COL_BLOCK,
    EXACT_MAX_PRODUCTS,
    GROUP,
    ROW_BLOCK,
    IVFIndex,
    RetrievalConfig,
    Retriever,
    augmented,
    exact_topk,
    recall_at_m,
    recall_with_ties,
)

__all__ = [
    "COL_BLOCK",
    "EXACT_MAX_PRODUCTS",
    "GROUP",
    "ROW_BLOCK",
    "IVFIndex",
    "RetrievalConfig",
    "Retriever",
    "augmented",
    "exact_topk",
    "recall_at_m",
    "recall_with_ties",
]
