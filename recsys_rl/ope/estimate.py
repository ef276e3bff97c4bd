"""The result every estimator returns, and the confidence intervals and weight diagnostics behind it.

Every estimator here is a mean of per-row terms t_i (or, for SNIPS, a ratio Σt_i / Σw_i), so the
normal interval and the bootstrap both work on those per-row arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

_BOOT_CHUNK_ELEMS = 2_000_000


@dataclass(frozen=True)
class Estimate:
    """An off-policy value estimate with its uncertainty and importance-weight diagnostics.

    std_err is the analytic standard error (CLT, or the delta method for SNIPS) whichever interval was
    asked for; ess = (Σw)²/Σw² of the importance weights (for per-position weights, the smallest over
    positions); max_weight is the largest weight after clipping; n the number of logged rows.
    """

    name: str
    value: float
    ci_low: float
    ci_high: float
    std_err: float
    ess: float
    max_weight: float
    n: int


def normal_ci(value: float, std_err: float, level: float = 0.95) -> tuple[float, float]:
    """value ± z·se with z the two-sided normal quantile (1.96 for level 0.95)."""
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return value - z * std_err, value + z * std_err


def bootstrap_ci(
    terms: np.ndarray,
    denominators: np.ndarray | None = None,
    *,
    n_boot: int = 500,
    level: float = 0.95,
    seed: int | np.random.Generator = 0,
) -> tuple[float, float]:
    """Percentile bootstrap of mean(terms) or, with ``denominators``, of Σterms / Σdenominators.

    terms, denominators: (n,). Rows are resampled with replacement n_boot times, in chunks of whole
    resamples so memory stays bounded for large n; the same seed gives the same interval.
    """
    if n_boot < 2:
        raise ValueError(f"n_boot: need at least 2 resamples, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = terms.shape[0]
    chunk = max(1, _BOOT_CHUNK_ELEMS // n)
    stats = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        num = terms[idx].sum(axis=1)
        den = denominators[idx].sum(axis=1) if denominators is not None else n
        with np.errstate(invalid="ignore", divide="ignore"):
            stats[start : start + idx.shape[0]] = num / den
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def effective_sample_size(weights: np.ndarray) -> float:
    """(Σw)²/Σw² for weights (n,); for per-position weights (n, K), the smallest over positions.

    Equals n when all weights are equal and falls towards 1 when one row dominates; 0 when every
    weight is 0 (the target never takes any logged action).
    """
    w = weights.reshape(weights.shape[0], -1)
    sq = (w**2).sum(axis=0)
    ess = np.where(sq > 0, w.sum(axis=0) ** 2 / np.where(sq > 0, sq, 1.0), 0.0)
    return float(ess.min())


def summarise(
    name: str,
    terms: np.ndarray,
    weights: np.ndarray,
    *,
    ci: str = "normal",
    n_boot: int = 500,
    seed: int | np.random.Generator = 0,
    denominators: np.ndarray | None = None,
) -> Estimate:
    """Estimate from per-row terms t_i (n,) and importance weights (n,) or (n, K).

    Without denominators value = mean(t), se = sd(t)/√n. With denominators d (SNIPS),
    value = Σt/Σd and, by the delta method, se = sd(t − value·d)/(√n · mean(d)).
    """
    if ci not in ("normal", "bootstrap"):
        raise ValueError(f"ci: must be 'normal' or 'bootstrap', got {ci!r}")
    n = terms.shape[0]
    if denominators is None:
        value = float(terms.mean())
        std_err = float(terms.std(ddof=1) / np.sqrt(n))
    else:
        d_mean = float(denominators.mean())
        if d_mean <= 0:
            raise ValueError(
                f"{name}: every importance weight is 0, the self-normalised estimate is undefined"
            )
        value = float(terms.sum() / denominators.sum())
        std_err = float((terms - value * denominators).std(ddof=1) / (np.sqrt(n) * d_mean))
    if ci == "normal":
        lo, hi = normal_ci(value, std_err)
    else:
        lo, hi = bootstrap_ci(terms, denominators, n_boot=n_boot, seed=seed)
    return Estimate(
        name=name,
        value=value,
        ci_low=lo,
        ci_high=hi,
        std_err=std_err,
        ess=effective_sample_size(weights),
        max_weight=float(weights.max()),
        n=n,
    )
