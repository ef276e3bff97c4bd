"""Cross-fitted per-position reward model q̂(x, j, k) for the direct method and doubly robust.

Why per position: the target is a distribution over N!/(N-K)! banners, so E_{a~π}[q̂(x, a)] is only
tractable when the reward model is additive over positions,
    E_π[Σ_k q̂(x, a_k, k)] = Σ_k Σ_j P_π(j at k | x) · q̂(x, j, k),
which needs only the target's per-position marginals — or, for big catalogues, a Monte-Carlo
average over sampled target banners.

Why cross-fitting: DR is unbiased only if q̂ is independent of the rows it corrects, so the logged
rows are split into folds and each fold is scored by a model fitted on the others.

Default model: scikit-learn ``HistGradientBoostingRegressor`` (100 trees, no early stopping, seeded).
The reward depends on context × product interactions that a linear model on concatenated features
cannot express; histogram boosting learns them and fits 10⁵ rows in about a second. Pass
``model=Ridge()`` (or any regressor) when speed matters more than fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.base import RegressorMixin, clone
from sklearn.ensemble import HistGradientBoostingRegressor

from recsys_rl.ope.validation import (
    check_finite,
    check_items,
    check_ndim,
    check_probs,
    check_rows,
    to_items,
    to_numpy,
)

Featurizer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
_PREDICT_CHUNK = 1 << 18


@dataclass(frozen=True)
class RewardPredictions:
    """Cross-fitted reward-model outputs consumed by ``direct_method`` and ``doubly_robust``.

    logged: (n, K) q̂(x_i, a_ik, k) at each logged product and position;
    target: (n,) E_{a~π(·|x_i)}[Σ_k q̂(x_i, a_k, k)], the model's value of the target per context.
    """

    logged: np.ndarray
    target: np.ndarray


def default_reward_model(seed: int = 0) -> HistGradientBoostingRegressor:
    """Squared-loss gradient boosting: 100 trees of ≤31 leaves, fixed iterations (deterministic)."""
    return HistGradientBoostingRegressor(
        max_iter=100, learning_rate=0.1, early_stopping=False, random_state=seed
    )


def position_features(
    context_features: np.ndarray, item_features: np.ndarray, n_positions: int
) -> Featurizer:
    """Featurizer (rows (m,), items (m,), positions (m,)) -> (m, F + G + K):
    [context_features[row], item_features[item], one-hot(position)]."""
    eye = np.eye(n_positions)

    def featurize(rows: np.ndarray, items: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return np.concatenate([context_features[rows], item_features[items], eye[positions]], axis=1)

    return featurize


def _predict(model: RegressorMixin, featurize: Featurizer, rows, items, positions) -> np.ndarray:
    """q̂ for broadcastable index arrays whose first axis is the context, scored a block of contexts
    at a time so the feature matrix stays small."""
    shape = np.broadcast_shapes(rows.shape, items.shape, positions.shape)
    per_row = int(np.prod(shape[1:]))
    step = max(1, _PREDICT_CHUNK // per_row)
    out = np.empty(shape)
    for s in range(0, shape[0], step):
        r, i, p = np.broadcast_arrays(
            *(x[s : s + step] if x.shape[0] > 1 else x for x in (rows, items, positions))
        )
        out[s : s + step] = model.predict(featurize(r.reshape(-1), i.reshape(-1), p.reshape(-1))).reshape(
            r.shape
        )
    return out


def cross_fit_rewards(
    position_rewards,
    banners,
    context_features,
    item_features,
    *,
    target_marginals=None,
    candidates=None,
    target_banners=None,
    model: RegressorMixin | None = None,
    n_folds: int = 2,
    seed: int = 0,
    featurize: Featurizer | None = None,
) -> RewardPredictions:
    """Fit q̂(x, j, k) on the logged (context, product, position, reward) rows with K-fold cross-fitting.

    position_rewards (n, K) float; banners (n, K) logged product ids; context_features (n, F);
    item_features (N, G). The target policy is given by exactly one of:
    - target_marginals (n, K, N): P_π(j at k | x_i) over the whole catalogue, or (n, K, C) over a
      per-context candidate subset ``candidates`` (n, C) of product ids (mass outside the candidates
      is dropped, so the subset should hold nearly all of it);
    - target_banners (n, S, K): S banners sampled from π per context; target = mean over S of Σ_k q̂.
    ``featurize`` replaces the default [context, product, one-hot position] features.
    """
    r = to_numpy(position_rewards, "position_rewards")
    check_ndim("position_rewards", r, 2)
    check_finite("position_rewards", r)
    ctx = to_numpy(context_features, "context_features")
    check_ndim("context_features", ctx, 2)
    check_finite("context_features", ctx)
    itf = to_numpy(item_features, "item_features")
    check_ndim("item_features", itf, 2)
    check_finite("item_features", itf)
    a = to_items(banners, "banners", 2)
    n, k_size = r.shape
    n_items = itf.shape[0]
    if a.shape != r.shape:
        raise ValueError(f"banners: shape {a.shape} differs from position_rewards shape {r.shape}")
    check_items("banners", a, n_items, distinct=True)
    check_rows(position_rewards=r, banners=a, context_features=ctx)
    if not 2 <= n_folds <= n:
        raise ValueError(f"n_folds: must be in [2, {n}] (the number of rows), got {n_folds}")
    if (target_marginals is None) == (target_banners is None):
        raise ValueError("target_marginals / target_banners: give exactly one of them")

    if target_banners is not None:
        if candidates is not None:
            raise ValueError("candidates: only used with target_marginals")
        tb = to_items(target_banners, "target_banners", 3)
        if tb.shape[0] != n or tb.shape[2] != k_size:
            raise ValueError(f"target_banners: expected shape ({n}, S, {k_size}), got {tb.shape}")
        check_items("target_banners", tb, n_items, distinct=True)
    else:
        tm = to_numpy(target_marginals, "target_marginals")
        check_ndim("target_marginals", tm, 3)
        check_probs("target_marginals", tm, allow_zero=True)
        if candidates is None:
            cand = np.broadcast_to(np.arange(n_items), (n, n_items))
        else:
            cand = to_items(candidates, "candidates", 2)
            check_items("candidates", cand, n_items, distinct=True)
        if tm.shape != (n, k_size, cand.shape[1]):
            raise ValueError(
                f"target_marginals: expected shape ({n}, {k_size}, {cand.shape[1]}) "
                f"(rows, positions, {'candidates' if candidates is not None else 'catalogue'}), got {tm.shape}"
            )

    feats = featurize or position_features(ctx, itf, k_size)
    base = model if model is not None else default_reward_model(seed)
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % n_folds
    positions = np.arange(k_size)

    logged = np.empty((n, k_size))
    target = np.empty(n)
    for f in range(n_folds):
        train, held = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        x_train = feats(np.repeat(train, k_size), a[train].reshape(-1), np.tile(positions, train.size))
        fitted = clone(base).fit(x_train, r[train].reshape(-1))
        logged[held] = _predict(fitted, feats, held[:, None], a[held], positions[None, :])
        if target_banners is not None:
            q = _predict(fitted, feats, held[:, None, None], tb[held], positions[None, None, :])
            target[held] = q.sum(axis=2).mean(axis=1)
        else:
            q = _predict(fitted, feats, held[:, None, None], cand[held][:, None, :], positions[None, :, None])
            target[held] = (tm[held] * q).sum(axis=(1, 2))
    return RewardPredictions(logged=logged, target=target)
