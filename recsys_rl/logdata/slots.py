"""Slot-level logs: one row per displayed item, the layout most logging systems write.

A row holds the context columns, the product shown, its 0-based position, the propensity of that
product at that slot under the logging policy, and what the user did with it (click, units, revenue).

- With an impression key (``impression_id``) the rows are regrouped into banners: every impression
  needs exactly K rows at distinct positions 0..K-1 with distinct products and one context (its
  rows must agree on every context column). The result is a banner log like any other: per-position
  propensities become ``behaviour_marginals`` (n, K), and a banner propensity column, when mapped,
  must repeat the same value on each row of its banner.
- Without a key the rows stay position-wise examples: a batch of one product per row (items (n, 1))
  with ``positions`` (n,) and that slot's propensity as ``behaviour_marginals`` (n, 1). Position-wise
  estimators (IIPS, DM, DR) and item-level training use them; whole-banner IPS/SNIPS refuse.

Validation names the file, the column and the first bad row; nothing is written anywhere.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import torch

from recsys_rl.logdata.imported import ImportedLogs
from recsys_rl.logdata.mapping import ColumnMapping
from recsys_rl.logdata.propensity import banner_log_prob, check_probs
from recsys_rl.logdata.table import Table, check_cells, check_ids, first_true, ints, numbers, propensities
from recsys_rl.records import BannerBatch, ContextBatch, LoggedBatch, OutcomeBatch


def _column(t: Table, name: str, field: str, scalar) -> np.ndarray:
    return scalar(t, t.column(name, field), name, None)


def _slot_outcomes(t: Table, m: ColumnMapping) -> tuple[np.ndarray, np.ndarray, np.ndarray, set[str]]:
    """(clicks, units, revenue) (n,) of the rows, and which of them the log records."""
    click = _column(t, m.clicks, "clicks", numbers)
    check_cells(
        t,
        ((click != 0) & (click != 1))[:, None],
        [m.clicks],
        click[:, None],
        "click must be 0 or 1, got {value!r}",
    )
    outcomes = {"clicks"}
    out = [click]
    for field in ("units", "revenue"):
        name = getattr(m, field)
        if name is None:
            out.append(np.zeros(t.n))
            continue
        v = _column(t, name, field, numbers)
        check_cells(
            t,
            ~(np.isfinite(v) & (v >= 0))[:, None],
            [name],
            v[:, None],
            f"{field} must be a finite number >= 0, got {{value!r}}",
        )
        out.append(v)
        outcomes.add(field)
    return out[0], out[1], out[2], outcomes


def import_slots(
    t: Table, m: ColumnMapping, n_products: int, contexts: ContextBatch, source: str
) -> ImportedLogs:
    """Validate slot rows of table ``t`` (contexts: one per row, already read) and regroup them when
    the mapping names an impression key."""
    item = _column(t, m.items, "items", ints)
    check_ids(t, item[:, None], [m.items], n_products)
    pos = _column(t, m.position, "position", ints) - m.first_position
    k = m.banner_size if m.banner_size is not None else int(pos.max(initial=0)) + 1
    check_cells(
        t,
        ((pos < 0) | (pos >= k))[:, None],
        [m.position],
        pos[:, None],
        f"position {{value}} is outside [0, {k})" + ("" if m.banner_size else " (banner_size)"),
    )
    if k > n_products:
        raise t.error(m.items, f"{k}-product banners, but the catalogue has {n_products}")
    slot_p = _column(t, m.position_propensities, "position_propensities", propensities)
    check_probs(t, slot_p[:, None], [m.position_propensities])
    click, units, revenue, outcomes = _slot_outcomes(t, m)
    if m.impression_id is None:
        batch = LoggedBatch(
            contexts,
            BannerBatch(
                torch.from_numpy(item[:, None]),
                torch.full((t.n,), float("nan")),
                torch.from_numpy(pos[:, None].copy()),
            ),
            OutcomeBatch(*(torch.from_numpy(v[:, None].astype(np.float32)) for v in (click, units, revenue))),
        )
        return ImportedLogs(
            batch, slot_p[:, None], False, frozenset(outcomes), source, positions=pos, banner_size=k
        )
    return _regroup(t, m, k, item, pos, slot_p, (click, units, revenue), contexts, outcomes, source)


def _regroup(
    t, m, k, item, pos, slot_p, outcome_cols, contexts: ContextBatch, outcomes, source
) -> ImportedLogs:
    """Banners (B, K) from slot rows keyed by impression id, in order of each banner's first row."""
    arr = t.column(m.impression_id, "impression_id")
    missing = pc.is_null(arr).to_numpy(zero_copy_only=False)
    if missing.any():
        raise t.error(m.impression_id, "missing impression id", first_true(missing))
    keys = pc.cast(arr, "string").to_numpy(zero_copy_only=False)
    code, uniq = pd.factorize(keys)  # (n,) banner of each row, banners in first-seen order
    b = len(uniq)
    counts = np.bincount(code, minlength=b)
    short = counts[code] != k
    if short.any():
        i = first_true(short)
        raise t.error(
            m.impression_id, f"impression {keys[i]!r} has {counts[code[i]]} rows, a banner has {k}", i
        )
    slot = code * k + pos
    seen = pd.Index(slot).duplicated()
    if seen.any():
        i = first_true(seen)
        raise t.error(m.position, f"impression {keys[i]!r} has two rows at position {pos[i]}", i)
    first = pd.Series(np.arange(t.n)).groupby(code).min().to_numpy()  # (B,) first row of each banner
    for name, values in _context_columns(m, contexts):
        differs = (values != values[first][code]).reshape(t.n, -1).any(1)
        if differs.any():
            i = first_true(differs)
            raise t.error(
                name, f"impression {keys[i]!r}: differs from the banner's first row {first[code[i]]}", i
            )
    items = np.empty((b, k), dtype=np.int64)
    items[code, pos] = item
    order = np.sort(items, axis=1)
    dup = (order[:, 1:] == order[:, :-1]).any(1)
    if dup.any():
        i = first_true(dup[code])
        raise t.error(m.items, f"impression {keys[i]!r} shows a product twice", i)
    marg = np.empty((b, k))
    marg[code, pos] = slot_p
    per_pos = []
    for v in outcome_cols:
        grid = np.empty((b, k), dtype=np.float32)
        grid[code, pos] = v
        per_pos.append(torch.from_numpy(grid))
    log_prob = np.full(b, np.nan)
    if m.propensity is not None or m.log_propensity is not None:
        lp = banner_log_prob(t, m)
        differs = lp != lp[first][code]
        if differs.any():
            i = first_true(differs)
            col = m.log_propensity or m.propensity
            raise t.error(col, f"impression {keys[i]!r}: banner propensity differs between its rows", i)
        log_prob = lp[first]
    ctx = contexts[torch.from_numpy(first.copy())]
    batch = LoggedBatch(
        ctx,
        BannerBatch(torch.from_numpy(items), torch.from_numpy(log_prob.astype(np.float32))),
        OutcomeBatch(*per_pos),
    )
    return ImportedLogs(
        batch,
        marg,
        not np.isnan(log_prob).any(),
        frozenset(outcomes),
        source,
        banner_size=k,
        first_rows=first,
    )


def _context_columns(m: ColumnMapping, contexts: ContextBatch):
    """(column name, (n, ...) values) of each context field, for the within-banner agreement check."""
    if m.viewed is not None:
        yield m.viewed, contexts.viewed.numpy()
    if m.history is not None:
        yield (m.history if isinstance(m.history, str) else m.history[0]), contexts.history.numpy()
    if contexts.user_features is not None:
        yield "user_features", contexts.user_features.numpy()
    if contexts.user_categories is not None:
        yield "categorical_features", contexts.user_categories.numpy()
