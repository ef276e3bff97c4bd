"""IPS-weighted logistic regression on the context features: policy learning as weighted classification.

The classic reduction (as in RecoGym's multiclass IPS agent): every logged slot that earned reward r for
product a in context x becomes one example (features(x), label a) with weight r / mu(a), mu the logger's
probability of showing a. A multinomial logistic regression (scikit-learn) fitted on those examples
estimates which product a context's reward comes from, corrected for what the logger happened to show;
the banner is its top-K classes. Features: the bag of context products (N counts) plus the numeric
user features when the logs carry them.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression

from recsys_rl.config import RewardScheme
from recsys_rl.records import PAD, ContextBatch, LoggedBatch
from recsys_rl.rewards import position_rewards
from recsys_rl.yardsticks.common import ScoredClassic, context_items, show_rates

MAX_EXAMPLES = 50_000
"""Rewarded slots the regression is fitted on at most (a seeded uniform subsample beyond): a multinomial
fit costs (examples x N classes) per iteration, ~20 s at 50k examples and 1,000 products on one core."""
FLOOR = -30.0
"""Score of products that never earned reward in the logs (not a class of the fitted model)."""


def context_features(ctx: ContextBatch, n_products: int) -> sp.csr_matrix:
    """(B, N [+ F]) sparse features: counts of each product in the context, then user features."""
    items = context_items(ctx).numpy()
    rows = np.repeat(np.arange(len(items)), items.shape[1])
    cols = items.reshape(-1)
    keep = cols != PAD
    bag = sp.csr_matrix(
        (np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(len(items), n_products), dtype=np.float64
    )
    if ctx.user_features is None:
        return bag
    return sp.hstack([bag, sp.csr_matrix(ctx.user_features.numpy().astype(np.float64))], format="csr")


def ips_examples(
    logs: LoggedBatch, scheme: RewardScheme, n_products: int, seed: int, max_examples: int = MAX_EXAMPLES
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """(features (E, N [+ F]), labels (E,), weights (E,)) of the rewarded logged slots.

    weight = r / mu(a), normalised to mean 1 so the regulariser's strength does not depend on the
    logger; at most ``max_examples`` rows (seeded uniform subsample)."""
    rewards = position_rewards(scheme, logs.outcomes)  # (n, K)
    row, slot = (rewards > 0).nonzero(as_tuple=True)
    if len(row) > max_examples:
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(row), generator=g)[:max_examples].sort().values
        row, slot = row[pick], slot[pick]
    labels = logs.banners.items[row, slot]
    if len(labels.unique()) < 2:
        raise ValueError(
            "logs: the IPS logistic regression needs rewarded slots of at least two products, "
            f"found {len(labels.unique())}"
        )
    weights = (rewards[row, slot] / show_rates(logs, n_products)[labels]).double().numpy()
    features = context_features(logs.contexts[row], n_products)
    return features, labels.numpy(), weights / weights.mean()


class IPSLogisticRegression(ScoredClassic):
    """score_j = log P(j | context) under the IPS-weighted multinomial regression; products never
    rewarded in the logs score ``FLOOR``."""

    name = "ips_logreg"

    def __init__(self, model: LogisticRegression, n_products: int, banner_size: int) -> None:
        super().__init__(n_products, banner_size)
        self.model = model
        self.classes = torch.from_numpy(model.classes_.astype(np.int64))

    @classmethod
    def fit(
        cls,
        logs: LoggedBatch,
        scheme: RewardScheme,
        n_products: int,
        seed: int = 0,
        max_examples: int = MAX_EXAMPLES,
    ) -> IPSLogisticRegression:
        x, y, w = ips_examples(logs, scheme, n_products, seed, max_examples)
        model = LogisticRegression(max_iter=200, random_state=seed)
        model.fit(x, y, sample_weight=w)
        return cls(model, n_products, logs.banners.items.shape[1])

    def logits(self, ctx: ContextBatch) -> torch.Tensor:
        x = context_features(ctx, self.n_products)
        logp = torch.from_numpy(self.model.predict_log_proba(x)).float()  # (B, classes)
        scores = torch.full((len(ctx), self.n_products), FLOOR)
        scores[:, self.classes] = logp
        return scores
