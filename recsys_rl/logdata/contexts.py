"""Contexts from a logged table: one ``ContextBatch`` row per table row.

Each field is optional because shops log different things: the viewed product (none on a home page:
PAD), the past purchases (up to HISTORY_LEN, most recent first, PAD-padded), numeric user features
(one list column, one column per feature, or a pattern such as 'affinity_*') and categorical user
features (text, encoded under this log's own vocabulary; the raw values are kept so a model can
re-encode them under its vocabulary).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recsys_rl.logdata.mapping import ColumnMapping, Columns
from recsys_rl.logdata.table import (
    Table,
    check_cells,
    check_ids,
    expand_columns,
    first_true,
    ints,
    numbers,
    per_slot,
)
from recsys_rl.records import HISTORY_LEN, PAD, ContextBatch


def _history(t: Table, spec: Columns | None, n_products: int) -> np.ndarray:
    """(n, HISTORY_LEN) PAD-padded purchases. In per-slot columns a blank or PAD cell is an empty slot
    (later purchases move up); a list longer than HISTORY_LEN is an error."""
    out = np.full((t.n, HISTORY_LEN), PAD, dtype=np.int64)
    if spec is None:
        return out
    if isinstance(spec, list):
        cols = []
        for c in spec:
            arr = t.column(c, "history")
            present = pc.is_valid(arr).to_numpy(zero_copy_only=False)
            col = np.full(t.n, PAD, dtype=np.int64)
            col[present] = ints(t, arr.filter(pa.array(present)), c, np.flatnonzero(present))
            cols.append(col)
        h = np.stack(cols, axis=1)
        valid = h != PAD
        check_ids(t, h, spec, n_products, valid)
        order = np.argsort(~valid, axis=1, kind="stable")
        out[:, : h.shape[1]] = np.where(
            np.take_along_axis(valid, order, 1), np.take_along_axis(h, order, 1), PAD
        )
        return out
    h, lengths, names = per_slot(t, spec, "history", ints)
    long = lengths > HISTORY_LEN
    if long.any():
        i = first_true(long)
        raise t.error(spec, f"{lengths[i]} past purchases, at most {HISTORY_LEN}", i)
    valid = np.arange(h.shape[1]) < lengths[:, None]
    check_ids(t, h, names, n_products, valid)
    out[:, : h.shape[1]] = np.where(valid, h, PAD)
    return out


def _features(t: Table, spec: Columns) -> np.ndarray:
    """(n, F) float32 numeric user features from one list column (same length on every row) or F columns."""
    if isinstance(spec, list) or "*" in spec:
        spec = expand_columns(t, spec if isinstance(spec, list) else [spec], "user_features")
    values, lengths, names = per_slot(t, spec, "user_features", numbers)
    width = int(lengths[0]) if t.n else 0
    bad = lengths != width
    if bad.any():
        i = first_true(bad)
        raise t.error(names[0] if names else spec, f"has {lengths[i]} features, row 0 has {width}", i)
    check_cells(t, ~np.isfinite(values), names, values, "user feature {value!r} is not a finite number")
    return values.astype(np.float32)


def _categories(t: Table, names: list[str]) -> np.ndarray:
    """(n, C) raw categorical values as text; a missing cell is an error."""
    cols = []
    for c in names:
        arr = t.column(c, "categorical_features")
        missing = pc.is_null(arr).to_numpy(zero_copy_only=False)
        if missing.any():
            raise t.error(c, "missing category", first_true(missing))
        cols.append(pc.cast(arr, pa.string()).to_numpy(zero_copy_only=False).astype(str))
    return np.stack(cols, axis=1)


def read_contexts(
    t: Table, m: ColumnMapping, n_products: int
) -> tuple[ContextBatch, np.ndarray | None, list | None]:
    """One context per row: viewed (PAD when the mapping has none), history, numeric features, and
    categorical codes under this log's own vocabulary; plus the raw categorical values."""
    if m.viewed is not None:
        viewed = ints(t, t.column(m.viewed, "viewed"), m.viewed)
        check_ids(t, viewed[:, None], [m.viewed], n_products)
    else:
        viewed = np.full(t.n, PAD, dtype=np.int64)
    history = _history(t, m.history, n_products)
    feats = torch.from_numpy(_features(t, m.user_features)) if m.user_features is not None else None
    raw = codes = vocab = None
    if m.categorical_features:
        from recsys_rl.features import build_vocabulary, encode

        raw = _categories(t, expand_columns(t, m.categorical_features, "categorical_features"))
        vocab = build_vocabulary(raw)
        codes = torch.from_numpy(encode(raw, vocab))
    return ContextBatch(torch.from_numpy(viewed), torch.from_numpy(history), feats, codes), raw, vocab
