"""What the estimators need from a target policy at the logged banners, for catalogues of any size.

The policy is any callable ContextBatch -> logits (B, N) (a BannerPolicy's ``logits``, a model loaded
from MLflow); its banners are Plackett–Luce draws from logits / temperature. Contexts are scored a block
at a time so that no (n, N) matrix is ever held.

- π(a|x) for IPS/SNIPS: exact, ``marginals.banner_log_prob``.
- π_k(a_k|x), the per-position marginal of each logged product, for IIPS/DR: exact by enumeration up to
  ``MAX_EXACT_ITEMS`` products (``marginals.exact_marginals``); otherwise the Rao–Blackwellised
  Monte-Carlo estimate over S banners b drawn from π,
      π̂_k(j|x) = (1/S) Σ_s 1{j ∉ b_s,<k} · e^{s_j} / Σ_{l ∉ b_s,<k} e^{s_l},
  the exact probability that j lands at k given the sampled prefix. It is unbiased, never 0 for a product
  the policy can show, and far less noisy than counting where j landed; its noise is independent across
  contexts, so the estimators' per-row standard errors already include it.
- Banners drawn from π (the direct method's E_π[q̂]) by inverse CDF on each context's cumulative
  softmax, O(N + S·K·log N) per context instead of S·N Gumbel draws.

Precision: after any prefix of fewer than K products at least one of the K best products is left, so the
mass left is >= w_(K), the K-th largest weight. Where w_(K) >= 1e-9·Z, Z − (placed mass) keeps >= 7
digits. "Fragile" contexts below that are sampled with Gumbel-top-K (a CDF cannot resolve them), and their
mass left is computed as (mass outside the top K) + (top-K mass not placed) − (placed mass outside the
top K), which loses at most N·1e-16 relative.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from recsys_rl.ope.marginals import (
    MAX_EXACT_ITEMS,
    banner_log_prob,
    exact_marginals,
    marginals_of,
    sample_banners,
)
from recsys_rl.ope.validation import check_items, to_items
from recsys_rl.records import ContextBatch

LogitsFn = Callable[[ContextBatch], torch.Tensor]
_BLOCK_ELEMS = 1 << 21
_FRAGILE_MASS = 1e-9
_MAX_REDRAWS = 64


def _softmax_parts(s: np.ndarray, k_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(w, top, w_top, tail) for logits s (c, N): w = exp(s − max) (c, N); top (c, K) the K largest
    products; w_top (c, K) their weights; tail (c,) the summed weight of every other product."""
    w = np.exp(s - s.max(axis=1, keepdims=True))
    top = np.argpartition(-w, k_size - 1, axis=1)[:, :k_size]
    w_top = np.take_along_axis(w, top, axis=1)
    masked = w.copy()
    np.put_along_axis(masked, top, 0.0, axis=1)
    return w, top, w_top, masked.sum(axis=1)


def remaining_mass(prefix, w_prefix, top, w_top, tail) -> np.ndarray:
    """Σ_{l ∉ prefix} w_l without cancellation: tail + (unplaced top-K weight) − (placed weight outside
    the top K). prefix, w_prefix (..., k) distinct products and their weights; top, w_top (..., K); tail (...)."""
    in_top = (prefix[..., :, None] == top[..., None, :]).any(axis=-1)  # (..., k)
    placed_top = (top[..., :, None] == prefix[..., None, :]).any(axis=-1)  # (..., K)
    return tail + np.where(placed_top, 0.0, w_top).sum(axis=-1) - np.where(in_top, 0.0, w_prefix).sum(axis=-1)


def sample_pl(logits: np.ndarray, k_size: int, n_samples: int, generator: np.random.Generator) -> np.ndarray:
    """n_samples Plackett–Luce banners per context: (c, S, K) product ids in display order.

    Position k is drawn by inverse CDF from the softmax restricted to products not yet placed: a uniform on
    the mass left is mapped onto the full CDF by stepping over the placed products' intervals (in ascending
    CDF order), then found by binary search; the rare draw that rounding lands on a placed product is
    redrawn. Rows too peaked for the CDF use Gumbel-top-K.
    """
    s = np.asarray(logits, dtype=np.float64)
    n_items = s.shape[1]
    w, _, w_top, _ = _softmax_parts(s, k_size)
    out = np.empty((s.shape[0], n_samples, k_size), dtype=np.int64)
    fragile = w_top.min(axis=1) < _FRAGILE_MASS * w.sum(axis=1)
    if fragile.any():
        out[fragile] = sample_banners(s[fragile], k_size, n_samples, generator)
    ok = np.flatnonzero(~fragile)
    if ok.size == 0:
        return out
    w, c = w[ok], ok.size
    cdf = np.cumsum(w, axis=1)
    cdf_t = torch.from_numpy(cdf)
    rows2, rows3 = np.arange(c)[:, None], np.arange(c)[:, None, None]
    drawn = np.empty((c, n_samples, k_size), dtype=np.int64)
    for k in range(k_size):
        prefix = np.sort(drawn[:, :, :k], axis=2)  # (c, S, k), ascending = CDF order
        w_placed = w[rows3, prefix]
        left = cdf[:, -1:] - w_placed.sum(axis=2)  # (c, S); keeps >= 1e-7 relative precision here
        starts = cdf[rows3, prefix] - w_placed
        pick = np.zeros((c, n_samples), dtype=np.int64)
        todo = np.ones((c, n_samples), dtype=bool)
        for _ in range(_MAX_REDRAWS):
            y = generator.random((c, n_samples)) * left
            for i in range(k):
                y = np.where(y >= starts[..., i], y + w_placed[..., i], y)
            new = torch.searchsorted(cdf_t, torch.from_numpy(y), right=True).numpy().clip(max=n_items - 1)
            pick = np.where(todo, new, pick)
            todo = (pick[..., None] == prefix).any(axis=-1) | (w[rows2, pick] == 0)
            if not todo.any():
                break
        else:
            raise RuntimeError(f"sample_pl: could not place position {k} after {_MAX_REDRAWS} redraws")
        drawn[:, :, k] = pick
    out[ok] = drawn
    return out


def rb_marginals(logits: np.ndarray, banners: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Rao–Blackwellised π̂_k(a_k|x) for logged banners (c, K) from sampled banners (c, S, K): (c, K)."""
    s = np.asarray(logits, dtype=np.float64)
    c, k_size = banners.shape
    w, top, w_top, tail = _softmax_parts(s, k_size)
    rows3 = np.arange(c)[:, None, None]
    z = w.sum(axis=1)
    fragile = np.flatnonzero(w_top.min(axis=1) < _FRAGILE_MASS * z)
    w_a = np.take_along_axis(w, banners, axis=1)  # (c, K)
    out = np.zeros((c, k_size))
    for k in range(k_size):
        prefix = samples[:, :, :k]  # (c, S, k)
        w_prefix = w[rows3, prefix]
        left = z[:, None] - w_prefix.sum(axis=2)  # (c, S)
        if fragile.size:
            f = fragile
            left[f] = remaining_mass(
                prefix[f], w_prefix[f], top[f, None, :], w_top[f, None, :], tail[f, None]
            )
        taken = (prefix == banners[:, None, k : k + 1]).any(axis=2)  # (c, S)
        ratio = w_a[:, None, k] / np.maximum(left, w_a[:, None, k])
        out[:, k] = np.where(taken, 0.0, ratio).mean(axis=1)
    return out


@dataclass(frozen=True)
class TargetProbs:
    """Target-policy quantities at n logged banners.

    log_prob (n,): log π(a_i|x_i); marginals (n, K): π_k(a_ik|x_i) (exact or Rao–Blackwellised);
    exact_marginals (n, K, N) when the catalogue is small enough to enumerate, else None;
    samples (n, S', K) banners drawn from π per context when marginals are sampled, else None;
    pairs: target log-softmax at every (context, product) those arrays mention, for reward-model features.
    """

    log_prob: np.ndarray
    marginals: np.ndarray
    exact_marginals: np.ndarray | None
    samples: np.ndarray | None
    pairs: PairScores

    @property
    def exact(self) -> bool:
        return self.exact_marginals is not None


class PairScores:
    """Values at (context row, product) pairs, looked up with one binary search per query."""

    def __init__(self, rows: np.ndarray, items: np.ndarray, values: np.ndarray, n_items: int) -> None:
        keys = rows.astype(np.int64) * n_items + items.astype(np.int64)
        self.keys, first = np.unique(keys, return_index=True)
        self.values = values[first]
        self.n_items = n_items

    def __call__(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = rows.astype(np.int64) * self.n_items + items.astype(np.int64)
        idx = np.searchsorted(self.keys, keys).clip(max=len(self.keys) - 1)
        if (self.keys[idx] != keys).any():
            raise KeyError("PairScores: a (row, product) pair was not scored")
        return self.values[idx]


def _block_rows(n_items: int) -> int:
    return max(1, _BLOCK_ELEMS // n_items)


def _logits(fn: LogitsFn, contexts: ContextBatch, temperature: float) -> np.ndarray:
    with torch.no_grad():
        out = fn(contexts)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(contexts):
        shape = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
        raise ValueError(f"policy: expected logits of shape ({len(contexts)}, N), got {shape}")
    return out.detach().to(torch.float64).numpy() / temperature


def _n_items(fn: LogitsFn, contexts: ContextBatch, temperature: float) -> int:
    return _logits(fn, contexts[:2], temperature).shape[1]


def _pairs_of(s: np.ndarray, sl: slice, mentioned: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat (row, product, log-softmax score) of the products ``mentioned`` (c, m) in rows ``sl`` of
    scores ``s`` (c, N): the only first-position scores DM/DR read, kept instead of a (n, N) table."""
    lse = np.log(np.exp(s - s.max(1, keepdims=True)).sum(1)) + s.max(1)
    rows = np.broadcast_to(np.arange(sl.start, sl.stop)[:, None], mentioned.shape)
    values = np.take_along_axis(s, mentioned, axis=1) - lse[:, None]
    return rows.reshape(-1), mentioned.reshape(-1), values.reshape(-1)


def target_probs(
    policy: LogitsFn,
    contexts: ContextBatch,
    banners,
    *,
    n_samples: int = 64,
    keep_samples: int | None = None,
    generator: np.random.Generator,
    temperature: float = 1.0,
    max_exact_items: int = MAX_EXACT_ITEMS,
) -> TargetProbs:
    """π(a|x), π_k(a_k|x) and target banners for logged banners (n, K) of distinct product ids.

    n_samples banners per context feed the sampled marginals; the first keep_samples of them (default
    all) are returned and scored in ``pairs``, so memory stays O(n · keep_samples · K).
    """
    if not temperature > 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if n_samples < 1:
        raise ValueError(f"n_samples: must be >= 1, got {n_samples}")
    keep = n_samples if keep_samples is None else keep_samples
    if not 0 <= keep <= n_samples:
        raise ValueError(f"keep_samples: must be in [0, n_samples={n_samples}], got {keep}")
    a = to_items(banners, "banners", 2)
    n, k_size = a.shape
    n_items = _n_items(policy, contexts, temperature)
    check_items("banners", a, n_items, distinct=True)
    exact = n_items <= max_exact_items
    log_prob, marg = np.empty(n), np.empty((n, k_size))
    full = np.empty((n, k_size, n_items)) if exact else None
    samples = None if exact else np.empty((n, keep, k_size), dtype=np.int64)
    pair_rows, pair_items, pair_values = [], [], []
    step = _block_rows(n_items)
    for start in range(0, n, step):
        sl = slice(start, min(n, start + step))
        s = _logits(policy, contexts[sl], temperature)
        if s.shape[1] != n_items:
            raise ValueError(f"policy: logits width changed from {n_items} to {s.shape[1]}")
        log_prob[sl] = banner_log_prob(s, a[sl])
        if exact:
            full[sl] = exact_marginals(s, k_size, max_items=max_exact_items)
            marg[sl] = marginals_of(a[sl], full[sl])
            mentioned = np.broadcast_to(np.arange(n_items), (s.shape[0], n_items))
        else:
            drawn = sample_pl(s, k_size, n_samples, generator)
            marg[sl] = rb_marginals(s, a[sl], drawn)
            samples[sl] = drawn[:, :keep]
            mentioned = np.concatenate([a[sl], samples[sl].reshape(s.shape[0], -1)], axis=1)
        for acc, part in zip((pair_rows, pair_items, pair_values), _pairs_of(s, sl, mentioned), strict=True):
            acc.append(part)
    pairs = PairScores(
        np.concatenate(pair_rows), np.concatenate(pair_items), np.concatenate(pair_values), n_items
    )
    return TargetProbs(log_prob, marg, full, samples, pairs)


def pair_log_softmax(
    policy: LogitsFn, contexts: ContextBatch, keys: PairScores, temperature: float = 1.0
) -> PairScores:
    """Another policy's log-softmax at the same (context, product) pairs as ``keys`` (e.g. a reference)."""
    rows_all, items_all = np.divmod(keys.keys, keys.n_items)
    values = np.empty(len(keys.keys))
    n = len(contexts)
    step = _block_rows(keys.n_items)
    bounds = np.searchsorted(rows_all, np.arange(0, n + step, step))
    for b, start in enumerate(range(0, n, step)):
        s = _logits(policy, contexts[start : min(n, start + step)], temperature)
        if s.shape[1] != keys.n_items:
            raise ValueError(f"policy: scores {s.shape[1]} products, the target {keys.n_items}")
        lse = np.log(np.exp(s - s.max(1, keepdims=True)).sum(1)) + s.max(1)
        lo, hi = bounds[b], bounds[b + 1]
        r = rows_all[lo:hi] - start
        values[lo:hi] = s[r, items_all[lo:hi]] - lse[r]
    return PairScores(rows_all, items_all, values, keys.n_items)


def slot_target_probs(
    policy: LogitsFn,
    contexts: ContextBatch,
    items,
    positions,
    k_size: int,
    *,
    n_samples: int = 64,
    keep_samples: int | None = None,
    generator: np.random.Generator,
    temperature: float = 1.0,
    max_exact_items: int = MAX_EXACT_ITEMS,
) -> TargetProbs:
    """π_p(a|x) for single logged products (slot rows): items (n,) shown at positions (n,) of K-banners.

    Returns TargetProbs over one column: marginals (n, 1) = P_π(a_i at p_i | x_i) (exact for small
    catalogues, else Rao–Blackwellised from n_samples K-banners); exact_marginals (n, 1, N) the target's
    marginals at each row's position; samples (n, S', 1) the product the target puts at p_i in each
    kept sample; log_prob NaN (a slot row is not a banner).
    """
    a = to_items(np.asarray(items).reshape(-1, 1), "items", 2)
    p = np.asarray(positions, dtype=np.int64).reshape(-1)
    n = len(a)
    if len(p) != n or (p < 0).any() or (p >= k_size).any():
        raise ValueError(f"positions: expected (n,) = ({n},) values in [0, {k_size}), got {p.shape}")
    keep = n_samples if keep_samples is None else keep_samples
    n_items = _n_items(policy, contexts, temperature)
    check_items("items", a, n_items, distinct=False)
    exact = n_items <= max_exact_items
    marg = np.empty((n, 1))
    full = np.empty((n, 1, n_items)) if exact else None
    samples = None if exact else np.empty((n, keep, 1), dtype=np.int64)
    pair_rows, pair_items, pair_values = [], [], []
    step = _block_rows(n_items)
    for start in range(0, n, step):
        sl = slice(start, min(n, start + step))
        s = _logits(policy, contexts[sl], temperature)
        r = np.arange(s.shape[0])
        if exact:
            f = exact_marginals(s, k_size, max_items=max_exact_items)[r, p[sl]]  # (c, N)
            full[sl, 0] = f
            marg[sl, 0] = f[r, a[sl, 0]]
            mentioned = np.broadcast_to(np.arange(n_items), (s.shape[0], n_items))
        else:
            drawn = sample_pl(s, k_size, n_samples, generator)  # (c, S, K)
            # rb_marginals reads column k of the banners only at position k: the row's product everywhere
            marg[sl, 0] = rb_marginals(s, np.repeat(a[sl], k_size, axis=1), drawn)[r, p[sl]]
            samples[sl, :, 0] = drawn[r, :keep, p[sl]]
            mentioned = np.concatenate([a[sl], samples[sl, :, 0]], axis=1)
        for acc, part in zip((pair_rows, pair_items, pair_values), _pairs_of(s, sl, mentioned), strict=True):
            acc.append(part)
    pairs = PairScores(
        np.concatenate(pair_rows), np.concatenate(pair_items), np.concatenate(pair_values), n_items
    )
    return TargetProbs(np.full(n, np.nan), marg, full, samples, pairs)
