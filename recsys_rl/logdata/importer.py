"""Import logged data from the files people have: the event schema, or any table a column mapping describes.

Two layouts, Parquet or CSV:
- event schema: a directory holding impressions.{parquet,csv} and feedback.{parquet,csv} with the
  columns of ``records.IMPRESSION_SCHEMA`` / ``FEEDBACK_SCHEMA`` (what ``recsys_rl.logdata.parquet`` writes);
- mapped: a table described by a ``ColumnMapping`` YAML (``recsys_rl.logdata.mapping``), one row per
  impression (``recsys_rl.logdata.banners``) or one row per displayed item (``recsys_rl.logdata.slots``).

This module finds the file, reads it, builds the contexts and hands the rows to their layout. Every check
reports the first bad row as '<file>: <column>: row <i>: <problem>' (``recsys_rl.logdata.table``).
Importing only reads: a rejected file leaves nothing behind.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from recsys_rl.logdata.banners import import_banners
from recsys_rl.logdata.contexts import read_contexts
from recsys_rl.logdata.imported import ImportedLogs
from recsys_rl.logdata.mapping import ColumnMapping, event_mapping, load_mapping
from recsys_rl.logdata.parquet import FEEDBACK_FILE, IMPRESSIONS_FILE, LogFormatError, shard_files
from recsys_rl.logdata.slots import import_slots
from recsys_rl.logdata.table import read_table


def _list_columns(m: ColumnMapping) -> list[str]:
    return [
        c
        for c in (m.history, m.items, m.position_propensities, m.clicks, m.units, m.revenue, m.user_features)
        if isinstance(c, str) and "*" not in c
    ]


def _locate(path: Path, mapping: ColumnMapping | None) -> tuple[Path, ColumnMapping, str]:
    """(impressions file, mapping, description) for a log directory or file."""
    if mapping is None:
        if not path.is_dir():
            raise LogFormatError(
                f"{path}: not a log directory (expected {IMPRESSIONS_FILE} and {FEEDBACK_FILE}); "
                "pass a column mapping to read another layout"
            )
        for suffix in (".parquet", ".csv"):
            imp, fb = (path / f"{Path(f).stem}{suffix}" for f in (IMPRESSIONS_FILE, FEEDBACK_FILE))
            if shard_files(imp):  # the file itself, or one per shard-* directory (a sharded log)
                return imp, event_mapping(imp.name, fb.name), f"event schema ({path})"
        raise LogFormatError(f"{path}: no {IMPRESSIONS_FILE} (or impressions.csv) in this directory")
    if path.is_dir():
        if mapping.impressions is None:
            raise LogFormatError(
                f"{path}: is a directory; the mapping's 'impressions' must name the file in it"
            )
        return path / mapping.impressions, mapping, f"mapped table ({path / mapping.impressions})"
    return path, mapping, f"mapped table ({path})"


def import_logs(
    path: str | os.PathLike, n_products: int, mapping: ColumnMapping | str | os.PathLike | None = None
) -> ImportedLogs:
    """Read and validate a log: an event-schema directory (mapping None), or a table described by a
    ColumnMapping (or the path of its YAML). Product ids must lie in [0, n_products).

    Raises LogFormatError naming the file, column and first bad row; ConfigError for a bad mapping.
    """
    if n_products < 1:
        raise ValueError(f"n_products: need at least 1 product, got {n_products}")
    if mapping is not None and not isinstance(mapping, ColumnMapping):
        mapping = load_mapping(mapping)
    imp_path, m, source = _locate(Path(path), mapping)
    t = read_table(
        imp_path, _list_columns(m), "mapping field" if mapping is not None else "event schema field"
    )
    if t.n < 2:
        raise LogFormatError(f"{imp_path}: has {t.n} impressions, need at least 2")
    contexts, raw, vocab = read_contexts(t, m, n_products)
    if m.layout == "slot":
        out = import_slots(t, m, n_products, contexts, source)
    else:
        out = import_banners(t, m, n_products, contexts, source)
    if raw is not None:  # one raw row per batch row (the banner's first row when regrouped)
        first = out.first_rows if out.first_rows is not None else np.arange(t.n)
        out = replace(out, categories=raw[first], vocabulary=vocab)
    return out
