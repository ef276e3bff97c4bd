"""A logged-data table as read from Parquet or CSV, and the column checks that name the bad row.

Everything here knows columns, not what they mean: reading a file into a ``Table``, turning a column
into numbers or integer ids, list-valued columns (Arrow lists, or CSV cells of ids separated by spaces,
commas or semicolons such as "3 17 42" or "[3, 17, 42]", or one scalar column per slot) into (n, S)
arrays, and cell checks. Every check runs over whole columns with numpy and reports the first bad row
as '<file>: <column>: row <i>: <problem>' (i counts data rows from 0; CSV files add the line number).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from recsys_rl.logdata.mapping import Columns
from recsys_rl.logdata.parquet import LogFormatError, shard_files
from recsys_rl.records import BANNER_SIZE, MAX_BANNER_SIZE

_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


@dataclass
class Table:
    """A read table and how its rows are named in errors. role: how a missing column is explained
    ('mapping field' or 'event schema field')."""

    path: Path
    data: pa.Table
    csv: bool
    role: str

    @property
    def n(self) -> int:
        return self.data.num_rows

    def error(self, column: str, problem: str, row: int | None = None) -> LogFormatError:
        """'<file>: <column>: [row <i> [(line <l>)]: ]<problem>', to raise."""
        if row is None:
            return LogFormatError(f"{self.path}: {column}: {problem}")
        line = f" (line {row + 2})" if self.csv else ""
        return LogFormatError(f"{self.path}: {column}: row {row}{line}: {problem}")

    def column(self, name: str, field: str) -> pa.Array:
        """Column ``name`` (which the mapping's ``field`` named) as one array; missing: an error."""
        if name not in self.data.column_names:
            raise self.error(name, f"missing column ({self.role} {field})")
        return self.data.column(name).combine_chunks()


def _format(path: Path) -> str:
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise LogFormatError(f"{path}: unknown file type (expected {', '.join(sorted(_SUFFIXES))})")
    return fmt


def read_table(path: Path, list_columns: list[str], role: str) -> Table:
    """Read a Parquet or CSV table; in CSV the list-valued columns are kept as text to be parsed."""
    files = shard_files(path)  # a sharded log: the same file name in each shard-* directory beside it
    if not files:
        raise LogFormatError(f"{path}: file not found")
    try:
        if _format(path) == "parquet":
            return Table(path, pa.concat_tables([pq.read_table(f) for f in files]), csv=False, role=role)
        opts = pcsv.ConvertOptions(column_types=dict.fromkeys(list_columns, pa.string()))
        tables = [pcsv.read_csv(f, convert_options=opts) for f in files]
        return Table(path, pa.concat_tables(tables), csv=True, role=role)
    except (pa.ArrowException, OSError) as e:
        raise LogFormatError(f"{path}: not a readable {_format(path)} file ({e})") from None


def first_true(bad: np.ndarray) -> int:
    """Index of the first True of a boolean array that has one (the row an error names)."""
    return int(np.flatnonzero(bad)[0])


def _row_of(i: int, rows: np.ndarray | None) -> int:
    return i if rows is None else int(rows[i])


def numbers(
    t: Table, arr: pa.Array, name: str, rows: np.ndarray | None = None, what: str = "value"
) -> np.ndarray:
    """float64 values of a numeric, boolean or numeric-text column; a null or text cell is an error."""
    missing = pc.is_null(arr).to_numpy(zero_copy_only=False)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        text = arr.to_numpy(zero_copy_only=False)
        missing = missing | (pc.utf8_trim_whitespace(arr).to_numpy(zero_copy_only=False) == "")
        values = pd.to_numeric(pd.Series(text), errors="coerce").to_numpy(np.float64)
        unreadable = np.isnan(values) & ~missing & ~np.char.equal(np.char.lower(text.astype(str)), "nan")
        if unreadable.any():
            i = first_true(unreadable)
            raise t.error(name, f"{text[i]!r} is not a number", _row_of(i, rows))
    elif pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type):
        values = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    elif pa.types.is_null(arr.type):
        values = np.full(len(arr), np.nan)
    else:
        raise t.error(name, f"expected numbers, got {arr.type}")
    if missing.any():
        raise t.error(name, f"missing {what}", _row_of(first_true(missing), rows))
    return values


def propensities(t: Table, arr: pa.Array, name: str, rows: np.ndarray | None = None) -> np.ndarray:
    """``numbers`` whose missing cells are reported as a missing propensity (range checks: the caller's)."""
    return numbers(t, arr, name, rows, what="propensity")


def ints(t: Table, arr: pa.Array, name: str, rows: np.ndarray | None = None) -> np.ndarray:
    """int64 ids of an integer column, or of whole numbers in a float or text column."""
    if pa.types.is_integer(arr.type):
        missing = pc.is_null(arr).to_numpy(zero_copy_only=False)
        if missing.any():
            raise t.error(name, "missing value", _row_of(first_true(missing), rows))
        return arr.to_numpy(zero_copy_only=False).astype(np.int64)
    values = numbers(t, arr, name, rows)
    bad = ~np.isfinite(values) | (values != np.round(values)) | (np.abs(values) > 2**53)
    if bad.any():
        i = first_true(bad)
        raise t.error(name, f"{values[i].item()!r} is not an integer id", _row_of(i, rows))
    return values.astype(np.int64)


Scalar = Callable[[Table, pa.Array, str, np.ndarray | None], np.ndarray]


def _lists(t: Table, arr: pa.Array, name: str, scalar: Scalar) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, per-row lengths) of a list column, a text column of separated values, or a scalar
    column (one value per row, a null meaning an empty list)."""
    n = len(arr)
    if pa.types.is_fixed_size_list(arr.type):
        arr = arr.cast(pa.list_(arr.type.value_type))
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        missing = pc.is_null(arr).to_numpy(zero_copy_only=False)
        if missing.any():
            raise t.error(name, "missing value (null list)", first_true(missing))
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


def per_slot(t: Table, spec: Columns, field: str, scalar: Scalar) -> tuple[np.ndarray, np.ndarray, list[str]]:
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


def per_position(
    t: Table, spec: Columns, field: str, scalar: Scalar, k: int | None = None
) -> tuple[np.ndarray, list[str]]:
    """(n, K) per-position values; a list column must hold exactly K per row (K: given, else the first
    row's length, 1 to MAX_BANNER_SIZE)."""
    values, lengths, names = per_slot(t, spec, field, scalar)
    if k is None:
        k = int(lengths[0]) if t.n else BANNER_SIZE
        if not 1 <= k <= MAX_BANNER_SIZE:
            raise t.error(
                names[0] if names else spec, f"has {k} entries, a banner has 1 to {MAX_BANNER_SIZE}", 0
            )
    bad = lengths != k
    if bad.any():
        i = first_true(bad)
        raise t.error(names[0] if names else spec, f"has {lengths[i]} entries, expected {k} (as items)", i)
    return values, names


def check_cells(t: Table, bad: np.ndarray, names: list[str], values: np.ndarray, problem: str) -> None:
    """Raise for the first True cell of bad (n, S), naming its row and column."""
    if bad.any():
        row, slot = divmod(first_true(bad.reshape(-1)), bad.shape[1])
        raise t.error(names[slot], problem.format(value=values[row, slot].item()), row)


def check_ids(t: Table, ids: np.ndarray, names: list[str], n_products: int, valid=None) -> None:
    """Every id of ids (n, S) where valid (n, S) (default: everywhere) lies in [0, n_products)."""
    bad = (ids < 0) | (ids >= n_products)
    if valid is not None:
        bad &= valid
    check_cells(t, bad, names, ids, f"product id {{value}} is outside [0, {n_products})")


def expand_columns(t: Table, names: list[str], field: str) -> list[str]:
    """Column names with patterns ('user_feature_*') replaced by the matching columns, in numeric order."""
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
