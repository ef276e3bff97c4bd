"""Logged impressions and feedback as Parquet: write from batch records, read back as a LoggedBatch.

A log directory holds ``impressions.parquet`` (IMPRESSION_SCHEMA, one row per served banner) and
``feedback.parquet`` (FEEDBACK_SCHEMA, one "click" row per clicked position and one "purchase" row per
purchased position, with units and unit price). That is the shape a live event stream has, so logs from
the simulator and exports from production read the same way.

Tables are built column-wise from flat numpy arrays (list columns from values + offsets, feedback rows
from ``nonzero``), never row by row. Files are written under temporary names and renamed into place
when complete, so a failure never leaves a half-written log behind.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from recsys_rl.records import (
    BANNER_SIZE,
    FEEDBACK_SCHEMA,
    FEEDBACK_TYPES,
    HISTORY_LEN,
    IMPRESSION_SCHEMA,
    MAX_BANNER_SIZE,
    PAD,
    BannerBatch,
    ContextBatch,
    LoggedBatch,
    OutcomeBatch,
)

IMPRESSIONS_FILE = "impressions.parquet"
FEEDBACK_FILE = "feedback.parquet"
CLICK_DELAY_S = 5.0
PURCHASE_DELAY_S = 60.0
"""Synthetic delays of feedback after its impression, for logs that have no real event times."""


class LogFormatError(ValueError):
    """A logged-data file that cannot be used, worded as '<file>: <column>: <problem>'."""


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _list_column(values: np.ndarray, lengths: np.ndarray) -> pa.ListArray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(values, pa.int64()), type=pa.list_(pa.int64())
    )


def _ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers, pa.int64()), pa.string()), "-")


def impression_table(
    *,
    contexts: ContextBatch,
    banners: BannerBatch,
    user_ids: torch.Tensor,
    timestamps: torch.Tensor,
    policy_version: str,
    id_prefix: str,
    start: int = 0,
) -> pa.Table:
    """IMPRESSION_SCHEMA table for B impressions with ids '<id_prefix>-<start + i>'."""
    n = len(banners)
    for name, t in (("contexts", contexts.viewed), ("user_ids", user_ids), ("timestamps", timestamps)):
        if t.shape[0] != n:
            raise ValueError(f"{name}: has {t.shape[0]} rows but banners has {n}")
    history = _np(contexts.history)
    mask = history != PAD
    if history.shape[1] > HISTORY_LEN or (mask[:, 1:] & ~mask[:, :-1]).any():
        raise ValueError(f"contexts.history: at most {HISTORY_LEN} entries, PAD ({PAD}) only at the end")
    items = _np(banners.items)
    log_prob = _np(banners.log_prob).astype(np.float64)
    columns = {
        "impression_id": _ids(id_prefix, np.arange(start, start + n)),
        "timestamp": pa.array(_np(timestamps).astype(np.float64)),
        "user_id": pa.array(_np(user_ids).astype(np.int64)),
        "viewed": pa.array(_np(contexts.viewed).astype(np.int64)),
        "history": _list_column(history[mask], mask.sum(axis=1)),
        "items": _list_column(items.reshape(-1), np.full(n, items.shape[1])),
        "propensity": pa.array(np.exp(log_prob)),
        "log_propensity": pa.array(log_prob),
        "policy_version": pa.array(np.full(n, policy_version, dtype=object), pa.string()),
    }
    schema = IMPRESSION_SCHEMA
    if contexts.user_features is not None:  # an optional column: worlds that emit user features
        f = _np(contexts.user_features).astype(np.float32)
        columns["user_features"] = pa.FixedSizeListArray.from_arrays(pa.array(f.reshape(-1)), f.shape[1])
        schema = with_user_features(f.shape[1])
    return pa.Table.from_pydict(columns, schema=schema)


def with_user_features(n: int) -> pa.Schema:
    """IMPRESSION_SCHEMA plus the optional fixed-size ``user_features`` column of n float32."""
    return IMPRESSION_SCHEMA.append(pa.field("user_features", pa.list_(pa.float32(), n), nullable=False))


def feedback_table(
    *,
    banners: BannerBatch,
    outcomes: OutcomeBatch,
    prices: torch.Tensor,
    timestamps: torch.Tensor,
    id_prefix: str,
    start: int = 0,
) -> pa.Table:
    """FEEDBACK_SCHEMA rows for B impressions: clicks, then purchases, ordered by impression and position."""
    items = _np(banners.items)
    clicks = _np(outcomes.clicks) > 0
    units = _np(outcomes.units)
    bought = units > 0
    rows = np.concatenate([np.nonzero(clicks)[0], np.nonzero(bought)[0]])
    pos = np.concatenate([np.nonzero(clicks)[1], np.nonzero(bought)[1]])
    is_buy = np.concatenate([np.zeros(clicks.sum(), bool), np.ones(bought.sum(), bool)])
    order = np.lexsort((is_buy, pos, rows))
    rows, pos, is_buy = rows[order], pos[order], is_buy[order]

    product = items[rows, pos]
    imp_ids = _ids(id_prefix, start + rows)
    kind = np.where(is_buy, "purchase", "click").astype(object)
    delay = np.where(is_buy, PURCHASE_DELAY_S, CLICK_DELAY_S)
    columns = {
        "event_id": pc.binary_join_element_wise(
            imp_ids, pa.array(kind, pa.string()), pc.cast(pa.array(pos), pa.string()), "-"
        ),
        "impression_id": imp_ids,
        "timestamp": pa.array(_np(timestamps).astype(np.float64)[rows] + delay),
        "type": pa.array(kind, pa.string()),
        "product_id": pa.array(product.astype(np.int64)),
        "position": pa.array(pos.astype(np.int64)),
        "units": pa.array(np.where(is_buy, units[rows, pos], 0).astype(np.int64)),
        "price": pa.array(np.where(is_buy, _np(prices).astype(np.float64)[product], 0.0)),
    }
    return pa.Table.from_pydict(columns, schema=FEEDBACK_SCHEMA)


class LogWriter:
    """Streams batches of logged impressions into a log directory, all or nothing.

    Row groups go to temporary files in ``out_dir``; ``close()`` renames them to impressions.parquet and
    feedback.parquet (replacing an older log there). Leaving the ``with`` block by an exception deletes
    the temporary files and leaves whatever was there before untouched.
    """

    def __init__(
        self, out_dir: str | os.PathLike, *, policy_version: str, id_prefix: str, n_user_features: int = 0
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.policy_version, self.id_prefix = policy_version, id_prefix
        tag = f".tmp-{os.getpid()}-{id(self)}"
        self._paths = {
            name: (self.out_dir / f".{name}{tag}", self.out_dir / name)
            for name in (IMPRESSIONS_FILE, FEEDBACK_FILE)
        }
        self._writers = {
            IMPRESSIONS_FILE: pq.ParquetWriter(
                self._paths[IMPRESSIONS_FILE][0],
                with_user_features(n_user_features) if n_user_features else IMPRESSION_SCHEMA,
            ),
            FEEDBACK_FILE: pq.ParquetWriter(self._paths[FEEDBACK_FILE][0], FEEDBACK_SCHEMA),
        }
        self.rows = 0

    def write(
        self,
        *,
        contexts: ContextBatch,
        banners: BannerBatch,
        outcomes: OutcomeBatch,
        prices: torch.Tensor,
        user_ids: torch.Tensor,
        timestamps: torch.Tensor,
    ) -> None:
        """Append one batch of B impressions (ids continue from the previous batch)."""
        imp = impression_table(
            contexts=contexts,
            banners=banners,
            user_ids=user_ids,
            timestamps=timestamps,
            policy_version=self.policy_version,
            id_prefix=self.id_prefix,
            start=self.rows,
        )
        fb = feedback_table(
            banners=banners,
            outcomes=outcomes,
            prices=prices,
            timestamps=timestamps,
            id_prefix=self.id_prefix,
            start=self.rows,
        )
        self._writers[IMPRESSIONS_FILE].write_table(imp)
        self._writers[FEEDBACK_FILE].write_table(fb)
        self.rows += len(banners)

    def close(self) -> Path:
        """Finish both files and move them into place; returns the log directory."""
        for w in self._writers.values():
            w.close()
        for tmp, final in self._paths.values():
            os.replace(tmp, final)
        return self.out_dir

    def abort(self) -> None:
        """Drop everything written so far."""
        for w in self._writers.values():
            with contextlib.suppress(OSError, pa.ArrowException):  # the file is deleted next anyway
                w.close()
        for tmp, _ in self._paths.values():
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_logs(
    out_dir: str | os.PathLike,
    *,
    contexts: ContextBatch,
    banners: BannerBatch,
    outcomes: OutcomeBatch,
    prices: torch.Tensor,
    user_ids: torch.Tensor,
    timestamps: torch.Tensor,
    policy_version: str,
    id_prefix: str,
) -> Path:
    """Write one batch of B impressions and their feedback to ``out_dir``; returns the directory.

    contexts/banners/outcomes: B rows; prices: (N,) unit prices; user_ids: (B,); timestamps: (B,) seconds.
    """
    with LogWriter(out_dir, policy_version=policy_version, id_prefix=id_prefix) as w:
        w.write(
            contexts=contexts,
            banners=banners,
            outcomes=outcomes,
            prices=prices,
            user_ids=user_ids,
            timestamps=timestamps,
        )
    return Path(out_dir)


SHARD_GLOB = "shard-*"
"""Sub-directories of a sharded log (``recsys-rl simulate --ray``): each a log directory of its own."""


def shard_files(path: Path) -> list[Path]:
    """``path`` when it is a file, else the file of that name in each ``shard-*`` directory beside it."""
    if path.is_file():
        return [path]
    return sorted(s / path.name for s in path.parent.glob(SHARD_GLOB) if (s / path.name).is_file())


def log_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(impression files, feedback files) of a log directory: its own pair, or each shard's, in order.

    A sharded log is a directory of ``shard-*`` log directories; read together they are one log
    (a pyarrow dataset over the files), whatever number of workers wrote them.
    """
    imp, fb = shard_files(root / IMPRESSIONS_FILE), shard_files(root / FEEDBACK_FILE)
    if not imp and not fb:
        raise LogFormatError(
            f"{root}: not a log directory (expected {IMPRESSIONS_FILE} and {FEEDBACK_FILE} in it, "
            f"or {SHARD_GLOB} directories holding them)"
        )
    return imp or [root / IMPRESSIONS_FILE], fb or [root / FEEDBACK_FILE]


def _read(paths: list[Path], schema: pa.Schema) -> pa.Table:
    """Read Parquet files as one table and check every schema column is present, of a compatible type
    and non-null (errors name the first file, or the file at fault where pyarrow says which)."""
    import pyarrow.dataset as ds

    for path in paths:
        if not path.is_file():
            raise LogFormatError(f"{path}: file not found")
    path = paths[0] if len(paths) == 1 else paths[0].parent.parent
    try:
        table = ds.dataset([str(p) for p in paths], format="parquet").to_table()
    except (pa.ArrowException, OSError) as e:
        raise LogFormatError(f"{path}: not a readable Parquet file ({e})") from None
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            raise LogFormatError(f"{path}: {field.name}: missing column")
        col = table.column(field.name)
        try:
            col = col.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise LogFormatError(f"{path}: {field.name}: expected {field.type}, got {col.type}") from None
        if col.null_count:
            raise LogFormatError(f"{path}: {field.name}: {col.null_count} missing (null) values")
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def _list_values(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, per-row lengths) of a list<int64> column."""
    return pc.list_flatten(col).to_numpy(), pc.list_value_length(col).to_numpy()


def _padded(values: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    out = np.full((len(lengths), width), PAD, dtype=np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    out[rows, np.arange(len(values)) - np.repeat(starts, lengths)] = values
    return out


def _user_features(imp_paths: list[Path], n: int) -> torch.Tensor | None:
    """(n, F) float32 from the optional ``user_features`` column, or None when the log has none."""
    import pyarrow.dataset as ds

    if "user_features" not in pq.read_schema(imp_paths[0]).names:
        return None
    table = ds.dataset([str(p) for p in imp_paths], format="parquet").to_table(columns=["user_features"])
    col = table.column("user_features").combine_chunks()
    values, lengths = pc.list_flatten(col).to_numpy(), pc.list_value_length(col).to_numpy()
    if n and (lengths != lengths[0]).any():
        raise LogFormatError(f"{imp_paths[0]}: user_features: every row needs {lengths[0]} values")
    return torch.from_numpy(values.astype(np.float32).reshape(n, -1 if n else 0))


def read_logs(path: str | os.PathLike) -> LoggedBatch:
    """Load a log directory (or a directory of log shards) as one LoggedBatch: feedback joined back
    onto its impression and position.

    History is PAD-padded to HISTORY_LEN; clicks (B, K) are 1 where a click event exists; units and
    revenue (B, K) sum the purchase events of that position (revenue = units * logged unit price).
    Repeated event ids count once. Raises LogFormatError naming the file and column on bad data.
    """
    root = Path(path)
    if not root.is_dir():
        raise LogFormatError(
            f"{root}: not a log directory (expected {IMPRESSIONS_FILE} and {FEEDBACK_FILE} in it)"
        )
    imp_paths, fb_paths = log_files(root)
    imp = _read(imp_paths, IMPRESSION_SCHEMA)
    fb = _read(fb_paths, FEEDBACK_SCHEMA)
    imp_path = imp_paths[0] if len(imp_paths) == 1 else root
    fb_path = fb_paths[0] if len(fb_paths) == 1 else root
    n = imp.num_rows

    hist_values, hist_len = _list_values(imp.column("history"))
    if (hist_len > HISTORY_LEN).any():
        raise LogFormatError(
            f"{imp_path}: history: a row has {hist_len.max()} entries, at most {HISTORY_LEN}"
        )
    if (hist_values < 0).any():
        raise LogFormatError(f"{imp_path}: history: product ids must be >= 0")
    item_values, item_len = _list_values(imp.column("items"))
    k = int(item_len[0]) if n else BANNER_SIZE  # the log's banner size: its first banner's
    if not 1 <= k <= MAX_BANNER_SIZE:
        raise LogFormatError(
            f"{imp_path}: items: row 0 has {k} products, a banner has 1 to {MAX_BANNER_SIZE}"
        )
    if (item_len != k).any():
        i = int(np.flatnonzero(item_len != k)[0])
        raise LogFormatError(
            f"{imp_path}: items: every banner needs {k} products (as row 0), row {i} has {int(item_len[i])}"
        )
    if (item_values < 0).any():
        raise LogFormatError(f"{imp_path}: items: product ids must be >= 0")
    items = item_values.reshape(n, k)
    viewed = imp.column("viewed").to_numpy()
    if (viewed < PAD).any():
        raise LogFormatError(f"{imp_path}: viewed: product ids must be >= 0 (or {PAD}: no viewed product)")

    imp_ids = pd.Index(imp.column("impression_id").to_numpy(zero_copy_only=False))
    if not imp_ids.is_unique:
        dup = imp_ids[imp_ids.duplicated()][0]
        raise LogFormatError(f"{imp_path}: impression_id: {dup!r} appears more than once")

    fb_df = fb.to_pandas().drop_duplicates("event_id")
    row = imp_ids.get_indexer(fb_df["impression_id"])
    if (row < 0).any():
        missing = fb_df["impression_id"].to_numpy()[row < 0][0]
        raise LogFormatError(f"{fb_path}: impression_id: {missing!r} is not in {imp_path.name}")
    kind = fb_df["type"].to_numpy()
    if not np.isin(kind, FEEDBACK_TYPES).all():
        bad = kind[~np.isin(kind, FEEDBACK_TYPES)][0]
        raise LogFormatError(f"{fb_path}: type: {bad!r} is not one of {', '.join(FEEDBACK_TYPES)}")
    pos = fb_df["position"].to_numpy()
    if ((pos < 0) | (pos >= k)).any():
        raise LogFormatError(f"{fb_path}: position: must be in [0, {k})")
    if (items[row, pos] != fb_df["product_id"].to_numpy()).any():
        raise LogFormatError(f"{fb_path}: product_id: does not match the banner's product at that position")

    clicks = np.zeros((n, k), np.float32)
    units = np.zeros((n, k), np.float64)
    revenue = np.zeros((n, k), np.float64)
    is_click, is_buy = kind == "click", kind == "purchase"
    clicks[row[is_click], pos[is_click]] = 1.0
    bought_units = fb_df["units"].to_numpy()[is_buy].astype(np.float64)
    np.add.at(units, (row[is_buy], pos[is_buy]), bought_units)
    np.add.at(revenue, (row[is_buy], pos[is_buy]), bought_units * fb_df["price"].to_numpy()[is_buy])

    contexts = ContextBatch(
        viewed=torch.from_numpy(viewed.copy()),
        history=torch.from_numpy(_padded(hist_values, hist_len, HISTORY_LEN)),
        user_features=_user_features(imp_paths, n),
    )
    banners = BannerBatch(
        items=torch.from_numpy(items.copy()),
        log_prob=torch.from_numpy(imp.column("log_propensity").to_numpy().astype(np.float32)),
    )
    outcomes = OutcomeBatch(
        clicks=torch.from_numpy(clicks),
        units=torch.from_numpy(units.astype(np.float32)),
        revenue=torch.from_numpy(revenue.astype(np.float32)),
    )
    return LoggedBatch(contexts, banners, outcomes)
