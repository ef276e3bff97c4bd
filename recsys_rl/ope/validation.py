"""Input checks shared by the estimators: every error names the argument and the first bad row.

Logged data arrives from event stores and files, so a NaN reward or a zero propensity is a data bug
that must surface as a clear message, not as an ``inf`` estimate.
"""

from __future__ import annotations

import numpy as np


def to_numpy(x, name: str, dtype=np.float64) -> np.ndarray:
    """Array-like or (CPU) torch tensor -> numpy array of ``dtype``."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot be read as a {np.dtype(dtype).name} array ({e})") from None


def _first_bad_row(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))[0])


def check_ndim(name: str, x: np.ndarray, ndim: int) -> None:
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {x.shape}")


def check_finite(name: str, x: np.ndarray) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        i = _first_bad_row(bad)
        raise ValueError(f"{name}: row {i}: non-finite value (NaN or inf)")


def check_probs(name: str, x: np.ndarray, *, allow_zero: bool) -> None:
    """Probabilities in (0, 1] (behaviour propensities) or [0, 1] (target probabilities)."""
    if np.isnan(x).any():
        raise ValueError(f"{name}: row {_first_bad_row(np.isnan(x))}: NaN propensity")
    low_bad = x < 0 if allow_zero else x <= 0
    bad = low_bad | (x > 1)
    if bad.any():
        i = _first_bad_row(bad)
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        val = float(x.reshape(x.shape[0], -1)[i][bad.reshape(x.shape[0], -1)[i]][0])
        raise ValueError(f"{name}: row {i}: propensity {val!r} is not in {interval}")


def check_rows(**arrays: np.ndarray) -> int:
    """All arrays have the same number of rows (at least 2, so a standard error exists); returns it."""
    lengths = {k: v.shape[0] for k, v in arrays.items()}
    first = next(iter(lengths))
    for k, n in lengths.items():
        if n != lengths[first]:
            raise ValueError(f"{k}: has {n} rows but {first} has {lengths[first]}")
    n = lengths[first]
    if n < 2:
        raise ValueError(f"{first}: need at least 2 rows for a standard error, got {n}")
    return n


def check_same_shape(**arrays: np.ndarray) -> None:
    items = list(arrays.items())
    k0, v0 = items[0]
    for k, v in items[1:]:
        if v.shape != v0.shape:
            raise ValueError(f"{k}: shape {v.shape} differs from {k0} shape {v0.shape}")


def check_clip(clip: float | None) -> None:
    if clip is not None and not (np.isfinite(clip) and clip > 0):
        raise ValueError(f"clip: must be a positive finite number or None, got {clip!r}")


def check_items(name: str, items: np.ndarray, n_items: int, *, distinct: bool) -> None:
    """Integer product ids in [0, n_items); ``distinct``: no repeat within a row (a banner)."""
    bad = (items < 0) | (items >= n_items)
    if bad.any():
        raise ValueError(f"{name}: row {_first_bad_row(bad)}: product id outside [0, {n_items})")
    if distinct and items.shape[-1] > 1:
        s = np.sort(items, axis=-1)
        dup = (s[..., 1:] == s[..., :-1]).any(axis=-1)
        if dup.any():
            raise ValueError(f"{name}: row {_first_bad_row(dup)}: repeated product in a banner")


def to_items(x, name: str, ndim: int) -> np.ndarray:
    """Product-id array (banners, candidates) -> int64, rejecting non-integral values."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    check_ndim(name, a, ndim)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name}: product ids must be integers, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)
