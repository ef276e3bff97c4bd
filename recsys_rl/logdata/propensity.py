"""The logging policy's propensities as logged: per-cell range checks and the banner propensity.

Off-policy estimates divide by these numbers, so a value outside (0, 1], a NaN, or a propensity column
that disagrees with its log-propensity column is refused with the row that shows it.
"""

from __future__ import annotations

import numpy as np

from recsys_rl.logdata.mapping import ColumnMapping
from recsys_rl.logdata.table import Table, check_cells, propensities

_PROPENSITY_RTOL = 1e-4


def check_probs(t: Table, p: np.ndarray, names: list[str]) -> None:
    """Every propensity of p (n, S) lies in (0, 1]; names: the column of each of the S slots."""
    check_cells(t, np.isnan(p), names, p, "missing propensity (NaN)")
    check_cells(t, ~((p > 0) & (p <= 1)), names, p, "propensity {value!r} is not in (0, 1]")


def banner_log_prob(t: Table, m: ColumnMapping) -> np.ndarray | None:
    """(n,) log P(banner) from the propensity and/or log_propensity columns (checked to agree)."""
    p = lp = None
    if m.propensity is not None:
        p = propensities(t, t.column(m.propensity, "propensity"), m.propensity)
        check_probs(t, p[:, None], [m.propensity])
    if m.log_propensity is not None:
        lp = propensities(t, t.column(m.log_propensity, "log_propensity"), m.log_propensity)
        check_cells(t, np.isnan(lp)[:, None], [m.log_propensity], lp[:, None], "missing propensity (NaN)")
        bad = ~(np.isfinite(lp) & (lp <= 0))
        check_cells(
            t, bad[:, None], [m.log_propensity], lp[:, None], "log-propensity {value!r} is not in (-inf, 0]"
        )
    if p is not None and lp is not None:
        off = np.abs(np.exp(lp) - p) > _PROPENSITY_RTOL * p
        check_cells(
            t,
            off[:, None],
            [m.propensity],
            p[:, None],
            f"propensity {{value!r}} disagrees with {m.log_propensity}",
        )
    if lp is not None:
        return lp
    return None if p is None else np.log(p)
