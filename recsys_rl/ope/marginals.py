"""Plackett–Luce probabilities of ordered banners, from per-context logits.

A PL policy with logits s (n, N) fills position 1, then position 2 among the products left, ...:
    P(a_1..a_K | x) = Π_k exp(s_{a_k}) / Σ_{j not in a_1..a_{k-1}} exp(s_j).
Whole-banner IPS needs that probability, RIPS its prefixes, IIPS and DR/DM the per-position marginals
P(product j at position k | x), which have no closed form: exact by enumerating ordered prefixes for
small catalogues, Monte-Carlo (Gumbel-top-K) otherwise.

Logits may be -inf for products the policy never shows (each row needs at least K finite logits);
NaN and +inf are rejected. Inputs are numpy arrays or CPU torch tensors; outputs are float64 numpy.
"""

from __future__ import annotations

import numpy as np

from recsys_rl.ope.validation import check_items, check_ndim, to_items, to_numpy
from recsys_rl.records import BANNER_SIZE

MAX_EXACT_ITEMS = 12
_CHUNK_ELEMS = 1 << 22


def _logits(logits, k: int) -> np.ndarray:
    s = to_numpy(logits, "logits")
    check_ndim("logits", s, 2)
    bad = np.isnan(s) | (s == np.inf)
    if bad.any():
        raise ValueError(f"logits: row {int(np.flatnonzero(bad.any(1))[0])}: NaN or +inf logit")
    if not 1 <= k <= s.shape[1]:
        raise ValueError(f"K: banner size must be in [1, {s.shape[1]}] (the catalogue size), got {k}")
    few = np.isfinite(s).sum(axis=1) < k
    if few.any():
        raise ValueError(f"logits: row {int(np.flatnonzero(few)[0])}: fewer than K={k} finite logits")
    return s


def _logsumexp(x: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    out = np.log(np.exp(x - m).sum(axis=axis, keepdims=True)) + m
    return out if keepdims else out.squeeze(axis)


def _banners(banners, logits_shape: tuple[int, int]) -> np.ndarray:
    a = to_items(banners, "banners", 2)
    if a.shape[0] != logits_shape[0]:
        raise ValueError(f"banners: has {a.shape[0]} rows but logits has {logits_shape[0]}")
    check_items("banners", a, logits_shape[1], distinct=True)
    return a


def position_log_probs(logits, banners) -> np.ndarray:
    """log P(a_k | x, a_1..a_{k-1}) for each position: (n, K).

    logits (n, N); banners (n, K) distinct product ids in display order. One masked log-sum-exp
    over the catalogue per position (stable, unlike subtracting placed mass from the full sum).
    """
    a = to_items(banners, "banners", 2)
    s = _logits(logits, a.shape[1])
    a = _banners(a, s.shape)
    n, k_size = a.shape
    rows = np.arange(n)
    remaining = s.copy()
    out = np.empty((n, k_size))
    for k in range(k_size):
        out[:, k] = s[rows, a[:, k]] - _logsumexp(remaining, axis=1)
        remaining[rows, a[:, k]] = -np.inf
    return out


def banner_log_prob(logits, banners) -> np.ndarray:
    """Exact log-probability of each ordered banner: Σ_k [s_{a_k} − logsumexp(s over products left)], (n,)."""
    return position_log_probs(logits, banners).sum(axis=1)


def prefix_probs(logits, banners) -> np.ndarray:
    """P(a_1..a_k | x) for k = 1..K: (n, K); the last column is the whole-banner probability."""
    return np.exp(np.cumsum(position_log_probs(logits, banners), axis=1))


def _prefix_levels(n_items: int, k_size: int) -> list[np.ndarray]:
    """For k = 0..K-1, the products left after every ordered k-prefix: (N!/(N-k)!, N-k).

    Row p of level k+1 is row p // (N-k) of level k followed by product comp[p // (N-k), p % (N-k)],
    so a flat (prefix, next product) index at level k is the prefix index at level k+1.
    """
    levels = []
    prefixes = np.zeros((1, 0), dtype=np.int64)
    for k in range(k_size):
        m = prefixes.shape[0]
        placed = np.zeros((m, n_items), dtype=bool)
        placed[np.arange(m)[:, None], prefixes] = True
        comp = np.nonzero(~placed)[1].reshape(m, n_items - k)
        levels.append(comp)
        if k + 1 < k_size:
            prefixes = np.concatenate([np.repeat(prefixes, n_items - k, axis=0), comp.reshape(-1, 1)], axis=1)
    return levels


def exact_marginals(logits, K: int = BANNER_SIZE, max_items: int = MAX_EXACT_ITEMS) -> np.ndarray:
    """P(product j at position k | x) exactly, by enumerating every ordered prefix: (n, K, N).

    P(j at k) = Σ over ordered (k-1)-prefixes p without j of P(p) · exp(s_j) / Σ_{l not in p} exp(s_l).
    Cost and memory grow as N!/(N-K)! per row (95,040 for N=12, K=5), hence the ``max_items`` guard;
    rows are processed in chunks. Use ``mc_marginals`` for real catalogues.
    """
    s = _logits(logits, K)
    n, n_items = s.shape
    if n_items > max_items:
        raise ValueError(
            f"logits: catalogue of {n_items} products is too large for exact marginals "
            f"(max {max_items}); use mc_marginals or a candidate subset"
        )
    levels = _prefix_levels(n_items, K)
    onehots = [np.eye(n_items)[comp.reshape(-1)] for comp in levels]
    per_row = max(comp.size for comp in levels)
    chunk = max(1, _CHUNK_ELEMS // per_row)
    out = np.empty((n, K, n_items))
    for start in range(0, n, chunk):
        sc = s[start : start + chunk]
        log_prefix = np.zeros((sc.shape[0], 1))
        for k, comp in enumerate(levels):
            left = sc[:, comp]
            joint = log_prefix[:, :, None] + left - _logsumexp(left, axis=2, keepdims=True)
            flat = np.exp(joint.reshape(sc.shape[0], -1))
            out[start : start + chunk, k] = flat @ onehots[k]
            log_prefix = joint.reshape(sc.shape[0], -1)
    return out


def sample_banners(logits, K: int, n_samples: int, generator: np.random.Generator) -> np.ndarray:
    """n_samples PL banners per context by Gumbel-top-K: (n, S, K) product ids in display order.

    The K largest of s_j + Gumbel noise, sorted descending, is an exact PL sample without replacement.
    """
    s = _logits(logits, K)
    if n_samples < 1:
        raise ValueError(f"n_samples: must be >= 1, got {n_samples}")
    n, n_items = s.shape
    out = np.empty((n, n_samples, K), dtype=np.int64)
    chunk = max(1, _CHUNK_ELEMS // (n * n_items))
    for start in range(0, n_samples, chunk):
        m = min(chunk, n_samples - start)
        keys = s[:, None, :] + generator.gumbel(size=(n, m, n_items))
        top = np.argpartition(-keys, K - 1, axis=2)[..., :K]
        order = np.argsort(-np.take_along_axis(keys, top, axis=2), axis=2, kind="stable")
        out[:, start : start + m] = np.take_along_axis(top, order, axis=2)
    return out


def mc_marginals(logits, K: int, n_samples: int, generator: np.random.Generator) -> np.ndarray:
    """Monte-Carlo P(product j at position k | x) from n_samples Gumbel-top-K banners: (n, K, N).

    Unbiased; each entry's standard error is at most 0.5/√n_samples. Rows sum to 1 over products.
    """
    s = _logits(logits, K)
    n, n_items = s.shape
    banners = sample_banners(s, K, n_samples, generator)
    flat = (np.arange(n)[:, None, None] * K + np.arange(K)[None, None, :]) * n_items + banners
    counts = np.bincount(flat.reshape(-1), minlength=n * K * n_items)
    return counts.reshape(n, K, n_items) / n_samples


def marginals_of(banners, marginals) -> np.ndarray:
    """The marginal of each logged product at its own position: (n, K) from banners (n, K), marginals (n, K, N)."""
    m = to_numpy(marginals, "marginals")
    check_ndim("marginals", m, 3)
    a = to_items(banners, "banners", 2)
    if a.shape != m.shape[:2]:
        raise ValueError(f"banners: shape {a.shape} does not match marginals (n, K) = {m.shape[:2]}")
    check_items("banners", a, m.shape[2], distinct=True)
    return np.take_along_axis(m, a[:, :, None], axis=2)[:, :, 0]
