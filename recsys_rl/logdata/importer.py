"""Logged data from the files people have: the event schema, or any table a column mapping describes.

Two layouts, Parquet or CSV:
- event schema: a directory holding impressions.{parquet,csv} and feedback.{parquet,csv} with the
  columns of ``records.IMPRESSION_SCHEMA`` / ``FEEDBACK_SCHEMA`` (what ``recsys_rl.logdata.parquet`` writes);
- mapped: a table described by a ``ColumnMapping`` YAML, e.g. one row per impression with columns
  item_0..item_4, click_0..click_4 and prop_0..prop_4. A mapping may give a banner propensity (or its
  log) or per-position propensities instead, clicks only or units/revenue as well, and either inline
  per-position feedback columns or a separate long feedback file (one row per click or purchase).

List-valued columns (history, items) are Arrow lists in Parquet and, in CSV, one cell of ids separated by
spaces, commas or semicolons ("3 17 42", "[3, 17, 42]"); or one column per slot.

Every check runs over whole columns with numpy and reports the first bad row as
'<file>: <column>: row <i>: <problem>' (i counts data rows from 0; CSV files add the line number).
Importing only reads: a rejected file leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recsys_rl.config import RewardScheme, load
from recsys_rl.logdata.parquet import FEEDBACK_FILE, IMPRESSIONS_FILE, LogFormatError
from recsys_rl.records import (
    BANNER_SIZE,
    FEEDBACK_TYPES,
    HISTORY_LEN,
    MAX_BANNER_SIZE,
    PAD,
    BannerBatch,
    ContextBatch,
    LoggedBatch,
    OutcomeBatch,
)

Columns = str | list[str]
"""One list-valued column, or one scalar column per slot (per banner position, or per history entry)."""

_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
_PROPENSITY_RTOL = 1e-4


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeedbackMapping(_Strict):
    """A long feedback table: one row per click or purchase, joined to impressions by impression id."""

    file: str = Field(..., min_length=1, description="feedback file, relative to the impressions file")
    impression_id: str = Field("impression_id", description="impression the event belongs to")
    type: str = Field("type", description="event type column: 'click' or 'purchase'")
    position: str = Field("position", description="0-based banner position of the event")
    product_id: str | None = Field(
        "product_id", description="product of the event (checked against the banner)"
    )
    units: str = Field("units", description="units bought (purchases)")
    price: str | None = Field("price", description="unit price (revenue = units * price); null: no revenue")
    event_id: str | None = Field("event_id", description="event id; repeated ids count once")


class ColumnMapping(_Strict):
    """Which columns of a logged-data table hold what. Unset optional fields mean 'not logged'.

    ``layout: slot`` reads one row per displayed item: ``items``, ``position``, ``position_propensities``
    (that slot's propensity) and ``clicks``/``units``/``revenue`` each name one column; ``impression_id``
    (optional) regroups the rows of one banner."""

    impressions: str | None = Field(None, description="impressions file inside --logs when it is a directory")
    layout: Literal["banner", "slot"] = Field(
        "banner", description="banner: one row per impression; slot: one row per displayed item"
    )
    impression_id: str | None = Field(
        None, description="unique impression id (needed with a feedback file); slot layout: the banner key"
    )
    position: str | None = Field(None, description="slot layout: the row's banner position")
    first_position: Literal[0, 1] = Field(0, description="slot layout: the number of the first position")
    banner_size: int | None = Field(
        None,
        ge=1,
        le=MAX_BANNER_SIZE,
        description="slot layout: products per banner (default: max position + 1)",
    )
    viewed: str | None = Field(None, description="the product being viewed (none: e.g. home-page banners)")
    history: Columns | None = Field(None, description="past purchases, most recent first (<= 10)")
    user_features: Columns | None = Field(
        None,
        description="numeric user features: one list column, one column per feature, or a pattern "
        "such as 'affinity_*' (every matching column, in numeric order)",
    )
    categorical_features: list[str] | None = Field(
        None,
        min_length=1,
        description="categorical user features, one column each (encoded by the model); patterns allowed",
    )
    items: Columns = Field(..., description="the banner's products in display order")
    propensity: str | None = Field(None, description="P(banner) under the logging policy")
    log_propensity: str | None = Field(None, description="log P(banner) under the logging policy")
    position_propensities: Columns | None = Field(
        None, description="P(logged product at its position) under the logging policy"
    )
    clicks: Columns | None = Field(None, description="inline feedback: 0/1 click per position")
    units: Columns | None = Field(None, description="inline feedback: units bought per position")
    revenue: Columns | None = Field(None, description="inline feedback: revenue per position")
    feedback: FeedbackMapping | None = Field(None, description="a separate long feedback file instead")

    @field_validator("items", "position_propensities", "clicks", "units", "revenue")
    @classmethod
    def _check_positions(cls, v: Columns | None) -> Columns | None:
        if isinstance(v, list) and not 1 <= len(v) <= MAX_BANNER_SIZE:
            raise ValueError(
                f"needs 1 to {MAX_BANNER_SIZE} column names, one per banner position, got {len(v)}"
            )
        return v

    @field_validator("history")
    @classmethod
    def _check_history(cls, v: Columns | None) -> Columns | None:
        if isinstance(v, list) and not 1 <= len(v) <= HISTORY_LEN:
            raise ValueError(f"needs 1 to {HISTORY_LEN} column names, got {len(v)}")
        return v

    @model_validator(mode="after")
    def _check_sources(self) -> ColumnMapping:
        if self.layout == "slot":
            return self._check_slot()
        if self.position is not None or self.banner_size is not None:
            raise ValueError("position/banner_size: only for layout: slot (one row per displayed item)")
        if isinstance(self.items, list):  # per-position columns: every per-position field has K of them
            k = len(self.items)
            for name in ("position_propensities", "clicks", "units", "revenue"):
                v = getattr(self, name)
                if isinstance(v, list) and len(v) != k:
                    raise ValueError(f"{name}: needs {k} column names, one per banner position (as items)")
        if self.propensity is None and self.log_propensity is None and self.position_propensities is None:
            raise ValueError(
                "give propensity, log_propensity or position_propensities (the logging policy's)"
            )
        if (self.clicks is None) == (self.feedback is None):
            raise ValueError("give exactly one of clicks (inline feedback) and feedback (a feedback file)")
        if self.clicks is None and (self.units is not None or self.revenue is not None):
            raise ValueError("units/revenue columns need inline clicks columns too")
        if self.feedback is not None and self.impression_id is None:
            raise ValueError("impression_id: needed to join a feedback file")
        return self

    def _check_slot(self) -> ColumnMapping:
        for name in ("items", "position_propensities", "clicks", "units", "revenue"):
            if isinstance(getattr(self, name), list):
                raise ValueError(f"{name}: layout slot: name one column (a row is one displayed item)")
        if self.position is None:
            raise ValueError("position: layout slot needs the column of each row's banner position")
        if self.feedback is not None or self.clicks is None:
            raise ValueError("clicks: layout slot needs the row's click column (no separate feedback file)")
        if self.position_propensities is None:
            raise ValueError("position_propensities: layout slot needs the column of that slot's propensity")
        if (self.propensity is not None or self.log_propensity is not None) and self.impression_id is None:
            raise ValueError(
                "propensity: a banner propensity in slot rows needs impression_id to regroup them"
            )
        return self


def event_mapping(impressions: str = IMPRESSIONS_FILE, feedback: str = FEEDBACK_FILE) -> ColumnMapping:
    """The event schema as a mapping (columns named as in IMPRESSION_SCHEMA / FEEDBACK_SCHEMA)."""
    return ColumnMapping(
        impressions=impressions,
        impression_id="impression_id",
        viewed="viewed",
        history="history",
        items="items",
        propensity="propensity",
        log_propensity="log_propensity",
        feedback=FeedbackMapping(file=feedback),
    )


def load_mapping(path: str | os.PathLike) -> ColumnMapping:
    """A ColumnMapping from YAML; ConfigError ('<file>: <field>: <problem>') when invalid."""
    return load(ColumnMapping, path)


@dataclass(frozen=True)
class ImportedLogs:
    """A validated log. behaviour_marginals: (n, K) P_mu(logged product at its position | x) when the
    layout logs them, else None. Without a banner propensity, batch.banners.log_prob is NaN.
    outcomes: which of 'clicks', 'units', 'revenue' the log records (the others are zeros).

    Slot rows that cannot be regrouped into banners (slot layout, no impression key): ``positions``
    (n,) is each row's banner position, the batch holds one product per row (items (n, 1)), and
    ``banner_size`` is the K of the banners they came from. Such rows feed position-wise estimators and
    item-level training, never whole-banner weights."""

    batch: LoggedBatch
    behaviour_marginals: np.ndarray | None
    has_banner_propensity: bool
    outcomes: frozenset[str]
    source: str
    positions: np.ndarray | None = None
    banner_size: int = BANNER_SIZE
    categories: np.ndarray | None = None  # (n, C) raw categorical values (str), one row per batch row
    first_rows: np.ndarray | None = None  # regrouped slot rows: (B,) the table row of each banner's context
    vocabulary: list[list[str]] | None = None  # of the categorical codes in batch.contexts (this log's own)

    def contexts_for(self, vocabulary) -> ContextBatch:
        """The batch's contexts with categorical features encoded under a model's ``vocabulary``."""
        from recsys_rl.features import encode

        ctx = self.batch.contexts
        if self.categories is None or not vocabulary:
            return ctx
        codes = torch.from_numpy(encode(self.categories, vocabulary))
        return ContextBatch(ctx.viewed, ctx.history, ctx.user_features, codes)

    def for_model(self, vocabulary) -> LoggedBatch:
        """The batch with its contexts encoded for a model (see ``contexts_for``)."""
        return LoggedBatch(self.contexts_for(vocabulary), self.batch.banners, self.batch.outcomes)

    @property
    def slot_rows(self) -> bool:
        """True when rows are single displayed items, not banners."""
        return self.positions is not None

    def __len__(self) -> int:
        return len(self.batch)

    def unobserved(self, scheme: RewardScheme) -> list[str]:
        """Outcomes the scheme rewards that this log does not record (its reward would be wrong)."""
        needs = {
            "click": "clicks",
            "purchase": "units",
            "multi_purchase": "units",
            "units": "units",
            "revenue": "revenue",
        }
        return sorted({needs[k] for k in needs if getattr(scheme, k) and needs[k] not in self.outcomes})


@dataclass
class _Table:
    """A read table and how its rows are named in errors."""

    path: Path
    data: pa.Table
    csv: bool
    role: str

    @property
    def n(self) -> int:
        return self.data.num_rows

    def error(self, column: str, problem: str, row: int | None = None) -> LogFormatError:
        if row is None:
            return LogFormatError(f"{self.path}: {column}: {problem}")
        line = f" (line {row + 2})" if self.csv else ""
        return LogFormatError(f"{self.path}: {column}: row {row}{line}: {problem}")

    def column(self, name: str, field: str) -> pa.Array:
        if name not in self.data.column_names:
            raise self.error(name, f"missing column ({self.role} {field})")
        return self.data.column(name).combine_chunks()


def _format(path: Path) -> str:
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise LogFormatError(f"{path}: unknown file type (expected {', '.join(sorted(_SUFFIXES))})")
    return fmt


def _read(path: Path, list_columns: list[str], role: str) -> _Table:
    """Read a Parquet or CSV table; in CSV the list-valued columns are kept as text to be parsed."""
    if not path.is_file():
        raise LogFormatError(f"{path}: file not found")
    try:
        if _format(path) == "parquet":
            return _Table(path, pq.read_table(path), csv=False, role=role)
        opts = pcsv.ConvertOptions(column_types=dict.fromkeys(list_columns, pa.string()))
        return _Table(path, pcsv.read_csv(path, convert_options=opts), csv=True, role=role)
    except (pa.ArrowException, OSError) as e:
        raise LogFormatError(f"{path}: not a readable {_format(path)} file ({e})") from None


def _first(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad)[0])


def _row_of(i: int, rows: np.ndarray | None) -> int:
    return i if rows is None else int(rows[i])


def _numbers(
    t: _Table, arr: pa.Array, name: str, rows: np.ndarray | None = None, what: str = "value"
) -> np.ndarray:
    """float64 values of a numeric, boolean or numeric-text column; a null or text cell is an error."""
    missing = pc.is_null(arr).to_numpy(zero_copy_only=False)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        text = arr.to_numpy(zero_copy_only=False)
        missing = missing | (pc.utf8_trim_whitespace(arr).to_numpy(zero_copy_only=False) == "")
        values = pd.to_numeric(pd.Series(text), errors="coerce").to_numpy(np.float64)
        unreadable = np.isnan(values) & ~missing & ~np.char.equal(np.char.lower(text.astype(str)), "nan")
        if unreadable.any():
            i = _first(unreadable)
            raise t.error(name, f"{text[i]!r} is not a number", _row_of(i, rows))
    elif pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type):
        values = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    elif pa.types.is_null(arr.type):
        values = np.full(len(arr), np.nan)
    else:
        raise t.error(name, f"expected numbers, got {arr.type}")
    if missing.any():
        raise t.error(name, f"missing {what}", _row_of(_first(missing), rows))
    return values


def _propensities(t: _Table, arr: pa.Array, name: str, rows: np.ndarray | None = None) -> np.ndarray:
    return _numbers(t, arr, name, rows, what="propensity")


def _ints(t: _Table, arr: pa.Array, name: str, rows: np.ndarray | None = None) -> np.ndarray:
    if pa.types.is_integer(arr.type):
        missing = pc.is_null(arr).to_numpy(zero_copy_only=False)
        if missing.any():
            raise t.error(name, "missing value", _row_of(_first(missing), rows))
        return arr.to_numpy(zero_copy_only=False).astype(np.int64)
    values = _numbers(t, arr, name, rows)
    bad = ~np.isfinite(values) | (values != np.round(values)) | (np.abs(values) > 2**53)
    if bad.any():
        i = _first(bad)
        raise t.error(name, f"{values[i].item()!r} is not an integer id", _row_of(i, rows))
    return values.astype(np.int64)


Scalar = Callable[[_Table, pa.Array, str, np.ndarray | None], np.ndarray]


def _lists(t: _Table, arr: pa.Array, name: str, scalar: Scalar) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, per-row lengths) of a list column, a text column of separated values, or a scalar
    column (one value per row, a null meaning an empty list)."""
    n = len(arr)
    if pa.types.is_fixed_size_list(arr.type):
        arr = arr.cast(pa.list_(arr.type.value_type))
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        missing = pc.is_null(arr).to_numpy(zero_copy_only=False)
        if missing.any():
            raise t.error(name, "missing value (null list)", _first(missing))
        flat, parents = pc.list_flatten(arr), pc.list_parent_indices(arr).to_numpy()
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
        return scalar(t, flat, name, parents), lengths
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        text = pc.utf8_trim_whitespace(pc.replace_substring_regex(arr.fill_null(""), r"[\[\]]", ""))
        parts = pc.split_pattern_regex(text, r"[\s,;]+")
        flat, parents = pc.list_flatten(parts), pc.list_parent_indices(parts).to_numpy()
        keep = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
        flat, parents = flat.filter(pa.array(keep)), parents[keep]
        return scalar(t, flat, name, parents), np.bincount(parents, minlength=n).astype(np.int64)
    present = pc.is_valid(arr).to_numpy(zero_copy_only=False)
    return scalar(t, arr.filter(pa.array(present)), name, np.flatnonzero(present)), present.astype(np.int64)


def _slots(t: _Table, spec: Columns, field: str, scalar: Scalar) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(n, S) values of S = len(spec) scalar columns or of one list column, with each row's length and
    the column name of each slot. A list column is left-aligned and padded with 0 past each row's length."""
    if isinstance(spec, list):
        cols = [scalar(t, t.column(c, field), c, None) for c in spec]
        return np.stack(cols, axis=1), np.full(t.n, len(spec), dtype=np.int64), list(spec)
    values, lengths = _lists(t, t.column(spec, field), spec, scalar)
    width = int(lengths.max(initial=0))
    out = np.zeros((t.n, width), dtype=values.dtype)
    rows = np.repeat(np.arange(t.n), lengths)
    out[rows, np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths, lengths)] = values
    return out, lengths, [spec] * width


def _positions(
    t: _Table, spec: Columns, field: str, scalar: Scalar, k: int | None = None
) -> tuple[np.ndarray, list[str]]:
    """(n, K) per-position values; a list column must hold exactly K per row (K: given, else the first
    row's length, 1 to MAX_BANNER_SIZE)."""
    values, lengths, names = _slots(t, spec, field, scalar)
    if k is None:
        k = int(lengths[0]) if t.n else BANNER_SIZE
        if not 1 <= k <= MAX_BANNER_SIZE:
            raise t.error(
                names[0] if names else spec, f"has {k} entries, a banner has 1 to {MAX_BANNER_SIZE}", 0
            )
    bad = lengths != k
    if bad.any():
        i = _first(bad)
        raise t.error(names[0] if names else spec, f"has {lengths[i]} entries, expected {k} (as items)", i)
    return values, names


def _check_cells(t: _Table, bad: np.ndarray, names: list[str], values: np.ndarray, problem: str) -> None:
    """Raise for the first True cell of bad (n, S), naming its row and column."""
    if bad.any():
        row, slot = divmod(_first(bad.reshape(-1)), bad.shape[1])
        raise t.error(names[slot], problem.format(value=values[row, slot].item()), row)


def _check_ids(t: _Table, ids: np.ndarray, names: list[str], n_products: int, valid=None) -> None:
    bad = (ids < 0) | (ids >= n_products)
    if valid is not None:
        bad &= valid
    _check_cells(t, bad, names, ids, f"product id {{value}} is outside [0, {n_products})")


def _check_probs(t: _Table, p: np.ndarray, names: list[str]) -> None:
    _check_cells(t, np.isnan(p), names, p, "missing propensity (NaN)")
    _check_cells(t, ~((p > 0) & (p <= 1)), names, p, "propensity {value!r} is not in (0, 1]")


def _history(t: _Table, spec: Columns | None, n_products: int) -> np.ndarray:
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
            col[present] = _ints(t, arr.filter(pa.array(present)), c, np.flatnonzero(present))
            cols.append(col)
        h = np.stack(cols, axis=1)
        valid = h != PAD
        _check_ids(t, h, spec, n_products, valid)
        order = np.argsort(~valid, axis=1, kind="stable")
        out[:, : h.shape[1]] = np.where(
            np.take_along_axis(valid, order, 1), np.take_along_axis(h, order, 1), PAD
        )
        return out
    h, lengths, names = _slots(t, spec, "history", _ints)
    long = lengths > HISTORY_LEN
    if long.any():
        i = _first(long)
        raise t.error(spec, f"{lengths[i]} past purchases, at most {HISTORY_LEN}", i)
    valid = np.arange(h.shape[1]) < lengths[:, None]
    _check_ids(t, h, names, n_products, valid)
    out[:, : h.shape[1]] = np.where(valid, h, PAD)
    return out


def _items(t: _Table, spec: Columns, n_products: int) -> np.ndarray:
    items, names = _positions(t, spec, "items", _ints)
    _check_ids(t, items, names, n_products)
    order = np.argsort(items, axis=1, kind="stable")
    s = np.take_along_axis(items, order, 1)
    dup = np.zeros_like(items, dtype=bool)
    np.put_along_axis(dup, order[:, 1:], s[:, 1:] == s[:, :-1], axis=1)
    _check_cells(t, dup, names, items, "product {value} appears twice in the banner")
    return items


def _banner_log_prob(t: _Table, m: ColumnMapping) -> np.ndarray | None:
    """(n,) log P(banner) from the propensity and/or log_propensity columns (checked to agree)."""
    p = lp = None
    if m.propensity is not None:
        p = _propensities(t, t.column(m.propensity, "propensity"), m.propensity)
        _check_probs(t, p[:, None], [m.propensity])
    if m.log_propensity is not None:
        lp = _propensities(t, t.column(m.log_propensity, "log_propensity"), m.log_propensity)
        _check_cells(t, np.isnan(lp)[:, None], [m.log_propensity], lp[:, None], "missing propensity (NaN)")
        bad = ~(np.isfinite(lp) & (lp <= 0))
        _check_cells(
            t, bad[:, None], [m.log_propensity], lp[:, None], "log-propensity {value!r} is not in (-inf, 0]"
        )
    if p is not None and lp is not None:
        off = np.abs(np.exp(lp) - p) > _PROPENSITY_RTOL * p
        _check_cells(
            t,
            off[:, None],
            [m.propensity],
            p[:, None],
            f"propensity {{value!r}} disagrees with {m.log_propensity}",
        )
    if lp is not None:
        return lp
    return None if p is None else np.log(p)


def _clicks(t: _Table, spec: Columns, k: int) -> np.ndarray:
    c, names = _positions(t, spec, "clicks", _numbers, k)
    _check_cells(t, (c != 0) & (c != 1), names, c, "click must be 0 or 1, got {value!r}")
    return c


def _nonnegative(t: _Table, spec: Columns, field: str, k: int) -> np.ndarray:
    v, names = _positions(t, spec, field, _numbers, k)
    _check_cells(
        t, ~(np.isfinite(v) & (v >= 0)), names, v, f"{field} must be a finite number >= 0, got {{value!r}}"
    )
    return v


def _impression_ids(t: _Table, name: str) -> pd.Index:
    arr = t.column(name, "impression_id")
    missing = pc.is_null(arr).to_numpy(zero_copy_only=False)
    if missing.any():
        raise t.error(name, "missing impression id", _first(missing))
    ids = pd.Index(pc.cast(arr, pa.string()).to_numpy(zero_copy_only=False))
    dup = ids.duplicated()
    if dup.any():
        i = _first(dup)
        raise t.error(name, f"impression id {ids[i]!r} appears more than once", i)
    return ids


def _feedback(
    f: _Table, m: FeedbackMapping, ids: pd.Index, items: np.ndarray, imp_path: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(clicks, units, revenue) (n, K) from long feedback rows, and whether revenue was logged."""
    n = len(ids)
    fid = f.column(m.impression_id, "impression_id")
    missing = pc.is_null(fid).to_numpy(zero_copy_only=False)
    if missing.any():
        raise f.error(m.impression_id, "missing impression id", _first(missing))
    fid = pc.cast(fid, pa.string()).to_numpy(zero_copy_only=False)
    row = ids.get_indexer(fid)
    if (row < 0).any():
        i = _first(row < 0)
        raise f.error(m.impression_id, f"impression id {fid[i]!r} is not in {imp_path.name}", i)
    kind = pc.cast(f.column(m.type, "type"), pa.string()).fill_null("").to_numpy(zero_copy_only=False)
    unknown = ~np.isin(kind, FEEDBACK_TYPES)
    if unknown.any():
        i = _first(unknown)
        raise f.error(m.type, f"{kind[i]!r} is not one of {', '.join(FEEDBACK_TYPES)}", i)
    k = items.shape[1]
    pos = _ints(f, f.column(m.position, "position"), m.position)
    bad = (pos < 0) | (pos >= k)
    if bad.any():
        i = _first(bad)
        raise f.error(m.position, f"position {pos[i]} is outside [0, {k})", i)
    if m.product_id is not None:
        product = _ints(f, f.column(m.product_id, "product_id"), m.product_id)
        shown = items[row, pos]
        if (product != shown).any():
            i = _first(product != shown)
            raise f.error(
                m.product_id,
                f"product {product[i]} is not at position {pos[i]} of its banner (shows {shown[i]})",
                i,
            )
    is_buy = kind == "purchase"
    units = _ints(f, f.column(m.units, "units"), m.units).astype(np.float64)
    bad = is_buy & (units < 1)
    if bad.any():
        i = _first(bad)
        raise f.error(m.units, f"a purchase needs units >= 1, got {units[i]:g}", i)
    price = np.zeros(f.n)
    if m.price is not None:
        price = _numbers(f, f.column(m.price, "price"), m.price)
        bad = is_buy & ~(np.isfinite(price) & (price >= 0))
        if bad.any():
            i = _first(bad)
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
            if imp.is_file():
                return imp, event_mapping(imp.name, fb.name), f"event schema ({path})"
        raise LogFormatError(f"{path}: no {IMPRESSIONS_FILE} (or impressions.csv) in this directory")
    if path.is_dir():
        if mapping.impressions is None:
            raise LogFormatError(
                f"{path}: is a directory; the mapping's 'impressions' must name the file in it"
            )
        return path / mapping.impressions, mapping, f"mapped table ({path / mapping.impressions})"
    return path, mapping, f"mapped table ({path})"


def _expand(t: _Table, names: list[str], field: str) -> list[str]:
    """Column names with patterns ('user_feature_*') replaced by the matching columns, in numeric order."""
    import fnmatch
    import re

    out = []
    for name in names:
        if "*" not in name:
            out.append(name)
            continue
        hits = [c for c in t.data.column_names if fnmatch.fnmatchcase(c, name)]
        if not hits:
            raise t.error(name, f"no column matches this {field} pattern")
        out += sorted(hits, key=lambda c: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", c)])
    return out


def _features(t: _Table, spec: Columns) -> np.ndarray:
    """(n, F) float32 numeric user features from one list column (same length on every row) or F columns."""
    if isinstance(spec, list) or "*" in spec:
        spec = _expand(t, spec if isinstance(spec, list) else [spec], "user_features")
    values, lengths, names = _slots(t, spec, "user_features", _numbers)
    width = int(lengths[0]) if t.n else 0
    bad = lengths != width
    if bad.any():
        i = _first(bad)
        raise t.error(names[0] if names else spec, f"has {lengths[i]} features, row 0 has {width}", i)
    _check_cells(t, ~np.isfinite(values), names, values, "user feature {value!r} is not a finite number")
    return values.astype(np.float32)


def _categories(t: _Table, names: list[str]) -> np.ndarray:
    """(n, C) raw categorical values as text; a missing cell is an error."""
    cols = []
    for c in names:
        arr = t.column(c, "categorical_features")
        missing = pc.is_null(arr).to_numpy(zero_copy_only=False)
        if missing.any():
            raise t.error(c, "missing category", _first(missing))
        cols.append(pc.cast(arr, pa.string()).to_numpy(zero_copy_only=False).astype(str))
    return np.stack(cols, axis=1)


def _contexts(
    t: _Table, m: ColumnMapping, n_products: int
) -> tuple[ContextBatch, np.ndarray | None, list | None]:
    """One context per row: viewed (PAD when the mapping has none), history, numeric features, and
    categorical codes under this log's own vocabulary; plus the raw categorical values."""
    if m.viewed is not None:
        viewed = _ints(t, t.column(m.viewed, "viewed"), m.viewed)
        _check_ids(t, viewed[:, None], [m.viewed], n_products)
    else:
        viewed = np.full(t.n, PAD, dtype=np.int64)
    history = _history(t, m.history, n_products)
    feats = torch.from_numpy(_features(t, m.user_features)) if m.user_features is not None else None
    raw = codes = vocab = None
    if m.categorical_features:
        from recsys_rl.features import build_vocabulary, encode

        raw = _categories(t, _expand(t, m.categorical_features, "categorical_features"))
        vocab = build_vocabulary(raw)
        codes = torch.from_numpy(encode(raw, vocab))
    return ContextBatch(torch.from_numpy(viewed), torch.from_numpy(history), feats, codes), raw, vocab


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
    t = _read(imp_path, _list_columns(m), "mapping field" if mapping is not None else "event schema field")
    if t.n < 2:
        raise LogFormatError(f"{imp_path}: has {t.n} impressions, need at least 2")
    contexts, raw, vocab = _contexts(t, m, n_products)
    if m.layout == "slot":
        from recsys_rl.logdata.slots import import_slots

        out = import_slots(t, m, n_products, contexts, source)
        if raw is not None:  # one raw row per batch row (the banner's first row when regrouped)
            first = out.first_rows if out.first_rows is not None else np.arange(t.n)
            out = replace(out, categories=raw[first], vocabulary=vocab)
        return out
    ids = _impression_ids(t, m.impression_id) if m.impression_id is not None else None
    items = _items(t, m.items, n_products)
    k = items.shape[1]
    if k > n_products:
        raise LogFormatError(f"{imp_path}: items: {k}-product banners, but the catalogue has {n_products}")
    log_prob = _banner_log_prob(t, m)
    marginals = None
    if m.position_propensities is not None:
        marginals, names = _positions(t, m.position_propensities, "position_propensities", _propensities, k)
        _check_probs(t, marginals, names)

    if m.feedback is not None:
        fb_path = imp_path.parent / m.feedback.file
        f = _read(fb_path, [], t.role)
        clicks, units, revenue, has_revenue = _feedback(f, m.feedback, ids, items, imp_path)
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
        categories=raw,
        vocabulary=vocab,
    )
