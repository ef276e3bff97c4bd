"""Typed records that cross module boundaries.

Everything is batched: one record holds a whole batch as tensors, never a list of per-item objects,
so hot paths stay vectorised. Shapes: B = batch, H = history length (10), K = banner size (5 by
default, up to 10).
Padding in ``history`` is ``PAD`` (-1).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import pyarrow as pa
import torch

PAD = -1
HISTORY_LEN = 10
BANNER_SIZE = 5
"""The default banner size K; a setting (``sim.banner_size``, a policy's ``banner_size``), 1..MAX_BANNER_SIZE."""
MAX_BANNER_SIZE = 10
POSITION_BIAS_CURVE = (1.0, 0.7, 0.5, 0.4, 0.3, 0.25, 0.2, 0.17, 0.14, 0.12)
"""Default examination probability per position; a K-slot banner uses the first K values."""


def _index(obj, idx):
    """Row-select every tensor field of a batch dataclass (None fields pass through)."""
    kw = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        kw[f.name] = v[idx] if isinstance(v, torch.Tensor) else v
    return type(obj)(**kw)


@dataclass
class ContextBatch:
    """What the policy sees: the viewed product and the user's last purchases (most recent first).

    viewed: (B,) long, PAD where no product is viewed (e.g. a home-page banner); history: (B, H) long,
    PAD-padded at the end (all PAD: no purchase history); user_features: (B, F) float or None;
    user_categories: (B, C) long codes of categorical user features (0 = unknown value; the vocabulary
    that maps raw values to codes lives with the model, ``recsys_rl.features``) or None.
    """

    viewed: torch.Tensor
    history: torch.Tensor
    user_features: torch.Tensor | None = None
    user_categories: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.viewed.dim() != 1 or self.history.dim() != 2 or self.history.shape[0] != self.viewed.shape[0]:
            raise ValueError(
                f"context: viewed must be (B,) and history (B, H); got {tuple(self.viewed.shape)} "
                f"and {tuple(self.history.shape)}"
            )

    @property
    def history_mask(self) -> torch.Tensor:
        """(B, H) bool, True where a real purchase sits."""
        return self.history != PAD

    def __len__(self) -> int:
        return self.viewed.shape[0]

    def __getitem__(self, idx) -> ContextBatch:
        return _index(self, idx)

    def repeat_interleave(self, n: int) -> ContextBatch:
        """Each context n times in a row: (B,) -> (B*n,), for several banners per context."""
        uf = None if self.user_features is None else self.user_features.repeat_interleave(n, 0)
        uc = None if self.user_categories is None else self.user_categories.repeat_interleave(n, 0)
        return ContextBatch(self.viewed.repeat_interleave(n, 0), self.history.repeat_interleave(n, 0), uf, uc)


@dataclass
class BannerBatch:
    """An ordered slate of K distinct products per row and the log-probability it had when chosen.

    items: (B, K) long; log_prob: (B,) float (log-propensity under the policy that chose it);
    positions: (B, K) long banner position of each column, or None for the usual 0..K-1 (slot rows that
    cannot be regrouped into banners hold one product per row, K = 1, at its own position).
    """

    items: torch.Tensor
    log_prob: torch.Tensor
    positions: torch.Tensor | None = None

    def position_index(self) -> torch.Tensor:
        """(B, K) banner position of every item column."""
        if self.positions is not None:
            return self.positions
        return torch.arange(self.items.shape[1]).expand_as(self.items)

    def __len__(self) -> int:
        return self.items.shape[0]

    def __getitem__(self, idx) -> BannerBatch:
        return _index(self, idx)


@dataclass
class OutcomeBatch:
    """What users did with each banner position.

    clicks: (B, K) float 0/1; units: (B, K) float (units bought, 0 if none); revenue: (B, K) float.
    """

    clicks: torch.Tensor
    units: torch.Tensor
    revenue: torch.Tensor

    @property
    def purchases(self) -> torch.Tensor:
        return (self.units > 0).to(self.units.dtype)

    @property
    def multi(self) -> torch.Tensor:
        """(B, K) 1 where more than one unit of that product was bought from the banner."""
        return (self.units > 1).to(self.units.dtype)

    def __len__(self) -> int:
        return self.clicks.shape[0]

    def __getitem__(self, idx) -> OutcomeBatch:
        return _index(self, idx)


@dataclass
class ExpectedOutcome:
    """Exact per-position expectations for (context, banner) pairs, no sampling noise.

    click: P(click) (B, K); purchase: P(units >= 1) (B, K); multi: P(units >= 2) (B, K);
    units: E[units] (B, K); revenue: E[price * units] (B, K).
    """

    click: torch.Tensor
    purchase: torch.Tensor
    multi: torch.Tensor
    units: torch.Tensor
    revenue: torch.Tensor


@dataclass
class LoggedBatch:
    """Logged impressions joined with their feedback: the batch every trainer and estimator consumes.

    The trainer does not know whether this came from the simulator or an event stream.
    """

    contexts: ContextBatch
    banners: BannerBatch
    outcomes: OutcomeBatch

    def __len__(self) -> int:
        return len(self.banners)

    def __getitem__(self, idx) -> LoggedBatch:
        return LoggedBatch(self.contexts[idx], self.banners[idx], self.outcomes[idx])


def catalogue_size(batch: LoggedBatch) -> int:
    """The catalogue a log implies when nobody says: its largest product id (shown, viewed or in a
    history; PAD ignored) + 1. Logs from elsewhere carry no catalogue size, and a simulator preset's
    ``n_products`` says nothing about them."""
    c = batch.contexts
    return int(max(batch.banners.items.max(), c.viewed.max(), c.history.max())) + 1


# Event schema shared by the logged-data generator, event stores and log import.
IMPRESSION_SCHEMA = pa.schema(
    [
        pa.field("impression_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),  # unix seconds
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("viewed", pa.int64(), nullable=False),
        pa.field("history", pa.list_(pa.int64()), nullable=False),  # most recent first, <= 10
        pa.field("items", pa.list_(pa.int64()), nullable=False),  # banner, in display order
        pa.field("propensity", pa.float64(), nullable=False),  # P(banner) under the serving policy
        pa.field("log_propensity", pa.float64(), nullable=False),
        pa.field("policy_version", pa.string(), nullable=False),
    ]
)

FEEDBACK_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("impression_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),
        pa.field("type", pa.string(), nullable=False),  # "click" | "purchase"
        pa.field("product_id", pa.int64(), nullable=False),
        pa.field("position", pa.int64(), nullable=False),  # 0-based slot in the banner
        pa.field("units", pa.int64(), nullable=False),  # 0 for clicks
        pa.field("price", pa.float64(), nullable=False),  # unit price, 0 for clicks
    ]
)

FEEDBACK_TYPES = ("click", "purchase")
