"""Banner-layout logs: one row per impression, the banner's K products in display order.

Per-position columns (items, position propensities, clicks, units, revenue) are either K scalar
columns or one list column holding K values on every row. Feedback is inline (per-position columns) or
a separate long file joined by impression id (``recsys_rl.logdata.feedback``). A banner shows K
distinct products; K comes from the items columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recsys_rl.logdata.feedback import join_feedback
from recsys_rl.logdata.imported import ImportedLogs
from recsys_rl.logdata.mapping import ColumnMapping, Columns
from recsys_rl.logdata.parquet import LogFormatError
from recsys_rl.logdata.propensity import banner_log_prob, check_probs
from recsys_rl.logdata.table import (
    Table,
    check_cells,
    check_ids,
    first_true,
    ints,
    numbers,
    per_position,
    propensities,
    read_table,
)
from recsys_rl.records import BannerBatch, ContextBatch, LoggedBatch, OutcomeBatch


def _items(t: Table, spec: Columns, n_products: int) -> np.ndarray:
    items, names = per_position(t, spec, "items", ints)
    check_ids(t, items, names, n_products)
    order = np.argsort(items, axis=1, kind="stable")
    s = np.take_along_axis(items, order, 1)
    dup = np.zeros_like(items, dtype=bool)
    np.put_along_axis(dup, order[:, 1:], s[:, 1:] == s[:, :-1], axis=1)
    check_cells(t, dup, names, items, "product {value} appears twice in the banner")
    return items


def _clicks(t: Table, spec: Columns, k: int) -> np.ndarray:
    c, names = per_position(t, spec, "clicks", numbers, k)
    check_cells(t, (c != 0) & (c != 1), names, c, "click must be 0 or 1, got {value!r}")
    return c


def _nonnegative(t: Table, spec: Columns, field: str, k: int) -> np.ndarray:
    v, names = per_position(t, spec, field, numbers, k)
    check_cells(
        t, ~(np.isfinite(v) & (v >= 0)), names, v, f"{field} must be a finite number >= 0, got {{value!r}}"
    )
    return v


def _impression_ids(t: Table, name: str) -> pd.Index:
    arr = t.column(name, "impression_id")
    missing = pc.is_null(arr).to_numpy(zero_copy_only=False)
    if missing.any():
        raise t.error(name, "missing impression id", first_true(missing))
    ids = pd.Index(pc.cast(arr, pa.string()).to_numpy(zero_copy_only=False))
    dup = ids.duplicated()
    if dup.any():
        i = first_true(dup)
        raise t.error(name, f"impression id {ids[i]!r} appears more than once", i)
    return ids


def import_banners(
    t: Table, m: ColumnMapping, n_products: int, contexts: ContextBatch, source: str
) -> ImportedLogs:
    """Validate the banner rows of table ``t`` (contexts: one per row, already read) and join their
    feedback; B = t.n banners of K products."""
    ids = _impression_ids(t, m.impression_id) if m.impression_id is not None else None
    items = _items(t, m.items, n_products)
    k = items.shape[1]
    if k > n_products:
        raise LogFormatError(f"{t.path}: items: {k}-product banners, but the catalogue has {n_products}")
    log_prob = banner_log_prob(t, m)
    marginals = None
    if m.position_propensities is not None:
        marginals, names = per_position(t, m.position_propensities, "position_propensities", propensities, k)
        check_probs(t, marginals, names)

    if m.feedback is not None:
        fb_path = t.path.parent / m.feedback.file
        f = read_table(fb_path, [], t.role)
        clicks, units, revenue, has_revenue = join_feedback(f, m.feedback, ids, items, t.path)
        outcomes = {"clicks", "units"} | ({"revenue"} if has_revenue else set())
    else:
        clicks = _clicks(t, m.clicks, k)
        units = _nonnegative(t, m.units, "units", k) if m.units is not None else np.zeros_like(clicks)
        revenue = _nonnegative(t, m.revenue, "revenue", k) if m.revenue is not None else np.zeros_like(clicks)
        outcomes = {"clicks"} | ({"units"} if m.units is not None else set())
        outcomes |= {"revenue"} if m.revenue is not None else set()

    batch = LoggedBatch(
        contexts,
        BannerBatch(
            torch.from_numpy(items),
            torch.from_numpy((log_prob if log_prob is not None else np.full(t.n, np.nan)).astype(np.float32)),
        ),
        OutcomeBatch(
            clicks=torch.from_numpy(clicks.astype(np.float32)),
            units=torch.from_numpy(units.astype(np.float32)),
            revenue=torch.from_numpy(revenue.astype(np.float32)),
        ),
    )
    return ImportedLogs(
        batch,
        marginals,
        log_prob is not None,
        frozenset(outcomes),
        source,
        banner_size=k,
    )
