"""A long feedback file joined to its impressions: one row per click or purchase, keyed by impression id.

This is the shape an event stream exports (and what ``recsys_rl.logdata.parquet`` writes): feedback
arrives after the impression, possibly twice (a repeated event id counts once). Every row must name a
known impression, a position inside its banner and, when the product is logged, the product shown
there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys_rl.logdata.mapping import FeedbackMapping
from recsys_rl.logdata.table import Table, first_true, ints, numbers
from recsys_rl.records import FEEDBACK_TYPES


def join_feedback(
    f: Table, m: FeedbackMapping, ids: pd.Index, items: np.ndarray, imp_path: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(clicks, units, revenue) (n, K) from long feedback rows, and whether revenue was logged."""
    n = len(ids)
    fid = f.column(m.impression_id, "impression_id")
    missing = pc.is_null(fid).to_numpy(zero_copy_only=False)
    if missing.any():
        raise f.error(m.impression_id, "missing impression id", first_true(missing))
    fid = pc.cast(fid, pa.string()).to_numpy(zero_copy_only=False)
    row = ids.get_indexer(fid)
    if (row < 0).any():
        i = first_true(row < 0)
        raise f.error(m.impression_id, f"impression id {fid[i]!r} is not in {imp_path.name}", i)
    kind = pc.cast(f.column(m.type, "type"), pa.string()).fill_null("").to_numpy(zero_copy_only=False)
    unknown = ~np.isin(kind, FEEDBACK_TYPES)
    if unknown.any():
        i = first_true(unknown)
        raise f.error(m.type, f"{kind[i]!r} is not one of {', '.join(FEEDBACK_TYPES)}", i)
    k = items.shape[1]
    pos = ints(f, f.column(m.position, "position"), m.position)
    bad = (pos < 0) | (pos >= k)
    if bad.any():
        i = first_true(bad)
        raise f.error(m.position, f"position {pos[i]} is outside [0, {k})", i)
    if m.product_id is not None:
        product = ints(f, f.column(m.product_id, "product_id"), m.product_id)
        shown = items[row, pos]
        if (product != shown).any():
            i = first_true(product != shown)
            raise f.error(
                m.product_id,
                f"product {product[i]} is not at position {pos[i]} of its banner (shows {shown[i]})",
                i,
            )
    is_buy = kind == "purchase"
    units = ints(f, f.column(m.units, "units"), m.units).astype(np.float64)
    bad = is_buy & (units < 1)
    if bad.any():
        i = first_true(bad)
        raise f.error(m.units, f"a purchase needs units >= 1, got {units[i]:g}", i)
    price = np.zeros(f.n)
    if m.price is not None:
        price = numbers(f, f.column(m.price, "price"), m.price)
        bad = is_buy & ~(np.isfinite(price) & (price >= 0))
        if bad.any():
            i = first_true(bad)
            raise f.error(m.price, f"price must be a finite number >= 0, got {price[i].item()!r}", i)
    keep = np.ones(f.n, dtype=bool)
    if m.event_id is not None:
        keep = ~pd.Index(
            pc.cast(f.column(m.event_id, "event_id"), pa.string()).to_numpy(zero_copy_only=False)
        ).duplicated()
    row, pos, is_buy, units, price = row[keep], pos[keep], is_buy[keep], units[keep], price[keep]
    clicks = np.zeros((n, k))
    clicks[row[~is_buy], pos[~is_buy]] = 1.0
    u = np.zeros((n, k))
    rev = np.zeros((n, k))
    np.add.at(u, (row[is_buy], pos[is_buy]), units[is_buy])
    np.add.at(rev, (row[is_buy], pos[is_buy]), units[is_buy] * price[is_buy])
    return clicks, u, rev, m.price is not None
