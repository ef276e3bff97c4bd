"""Event records and the event-store interface of the live path.

The server appends one ``Impression`` per served banner and one ``Feedback`` per click or purchase;
the online trainer reads impressions once their attribution window has passed, each joined with all
of its feedback, and commits how far it got. Both backends (SQLite, Redis Streams) implement
``EventStore`` with the same semantics, so the same tests run against both:

- appends are idempotent by ``impression_id`` / ``event_id`` and return only once the data is durable;
- ``read_ready`` returns the longest run of impressions, in append order, strictly after the consumer's
  committed offset whose timestamps are all ``<= until_ts``. It stops at the first impression that is
  not ready yet rather than skipping it, so an impression appended out of time order is delayed (by at
  most the clock skew between writers), never lost;
- ``commit`` moves a consumer's offset forward atomically and durably; a new store object on the same
  file / prefix resumes exactly after it.

Field meanings follow ``recsys_rl.records.IMPRESSION_SCHEMA`` / ``FEEDBACK_SCHEMA``.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import torch

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

Offset = Any  # opaque: an int sequence number for SQLite, a stream id "ms-seq" for Redis

DURABILITY = ("durable", "best-effort")


class StoreUnavailable(ConnectionError):
    """The store cannot take or serve data right now (Redis down or unreachable, disk full or
    unwritable), and nothing of the failed call was stored half-way. Transient: the same call can be
    retried as it is (appends are idempotent by id), so the server answers 503 with Retry-After and
    the trainer waits. The message names the store."""


class DurabilityError(RuntimeError):
    """The store's server would not keep acknowledged writes across a restart, and the store was not
    opened with ``durability="best-effort"``."""


def check_durability(durability: object) -> str:
    if durability not in DURABILITY:
        raise ValueError(f"durability: must be one of {DURABILITY}, got {durability!r}")
    return durability


def _str(obj: object, name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{obj}.{name}: must be a string, got {value!r}")
    if not value:
        raise ValueError(f"{obj}.{name}: must not be empty")
    return value


def _int(obj: object, name: str, value: object, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{obj}.{name}: must be an integer, got {value!r}")
    if value < lo:
        raise ValueError(f"{obj}.{name}: must be >= {lo}, got {value}")
    return int(value)


def _float(obj: object, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{obj}.{name}: must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{obj}.{name}: must be finite, got {value}")
    return value


def _ids(obj: object, name: str, value: object) -> tuple[int, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise TypeError(f"{obj}.{name}: must be a sequence of product ids, got {value!r}")
    return tuple(_int(obj, name, v) for v in value)


@dataclass(frozen=True, slots=True)
class Impression:
    """One served banner: the context it was served in and the propensity the serving policy gave it.

    ``history`` is most recent first, at most HISTORY_LEN ids; ``items`` are the K (1 to MAX_BANNER_SIZE) distinct
    products in display order; ``log_propensity`` is what off-policy correction uses (``propensity`` may
    underflow to 0 for large catalogues, its log does not).
    """

    impression_id: str
    timestamp: float
    user_id: int
    viewed: int
    history: tuple[int, ...]
    items: tuple[int, ...]
    propensity: float
    log_propensity: float
    policy_version: str

    def __post_init__(self) -> None:
        obj = "impression"
        s = object.__setattr__
        s(self, "impression_id", _str(obj, "impression_id", self.impression_id))
        obj = f"impression {self.impression_id!r}"
        s(self, "timestamp", _float(obj, "timestamp", self.timestamp))
        s(self, "user_id", _int(obj, "user_id", self.user_id))
        s(self, "viewed", _int(obj, "viewed", self.viewed, lo=PAD))  # PAD (-1): no viewed product
        s(self, "history", _ids(obj, "history", self.history))
        if len(self.history) > HISTORY_LEN:
            raise ValueError(f"{obj}.history: at most {HISTORY_LEN} products, got {len(self.history)}")
        s(self, "items", _ids(obj, "items", self.items))
        if not 1 <= len(self.items) <= MAX_BANNER_SIZE or len(set(self.items)) != len(self.items):
            raise ValueError(
                f"{obj}.items: must be 1 to {MAX_BANNER_SIZE} distinct product ids, got {self.items}"
            )
        s(self, "propensity", _float(obj, "propensity", self.propensity))
        if not 0.0 <= self.propensity <= 1.0:
            raise ValueError(f"{obj}.propensity: must be in [0, 1], got {self.propensity}")
        s(self, "log_propensity", _float(obj, "log_propensity", self.log_propensity))
        if self.log_propensity > 1e-9:
            raise ValueError(f"{obj}.log_propensity: must be <= 0, got {self.log_propensity}")
        if not math.isclose(math.exp(self.log_propensity), self.propensity, rel_tol=1e-4, abs_tol=1e-12):
            raise ValueError(
                f"{obj}.log_propensity: exp({self.log_propensity}) does not match "
                f"propensity {self.propensity}"
            )
        s(self, "policy_version", _str(obj, "policy_version", self.policy_version))


@dataclass(frozen=True, slots=True)
class Feedback:
    """A click or purchase on one banner slot. Clicks have ``units == 0``; ``price`` is the unit price."""

    event_id: str
    impression_id: str
    timestamp: float
    type: str
    product_id: int
    position: int
    units: int
    price: float

    def __post_init__(self) -> None:
        obj = "feedback"
        s = object.__setattr__
        s(self, "event_id", _str(obj, "event_id", self.event_id))
        obj = f"feedback {self.event_id!r}"
        s(self, "impression_id", _str(obj, "impression_id", self.impression_id))
        s(self, "timestamp", _float(obj, "timestamp", self.timestamp))
        if self.type not in FEEDBACK_TYPES:
            raise ValueError(f"{obj}.type: must be one of {FEEDBACK_TYPES}, got {self.type!r}")
        s(self, "product_id", _int(obj, "product_id", self.product_id))
        s(self, "position", _int(obj, "position", self.position))
        if self.position >= MAX_BANNER_SIZE:
            raise ValueError(f"{obj}.position: must be < {MAX_BANNER_SIZE}, got {self.position}")
        s(self, "units", _int(obj, "units", self.units))
        if self.type == "click" and self.units != 0:
            raise ValueError(f"{obj}.units: must be 0 for a click, got {self.units}")
        if self.type == "purchase" and self.units < 1:
            raise ValueError(f"{obj}.units: must be >= 1 for a purchase, got {self.units}")
        s(self, "price", _float(obj, "price", self.price))
        if self.price < 0:
            raise ValueError(f"{obj}.price: must be >= 0, got {self.price}")


@dataclass
class ReadBatch:
    """Impressions ready for training, in append order, with all their feedback.

    ``offset`` is the position after the last impression returned (the committed offset when nothing
    was ready): pass it to ``EventStore.commit`` once the batch has been trained on.
    """

    impressions: list[Impression]
    feedback: list[Feedback]
    offset: Offset

    def __len__(self) -> int:
        return len(self.impressions)

    def to_logged(self, n_products: int | None = None) -> LoggedBatch:
        """Batched tensors for the trainer.

        contexts.viewed (B,) long, contexts.history (B, HISTORY_LEN) long PAD-padded; banners.items
        (B, K) long, banners.log_prob (B,) float32 = log_propensity; outcomes (B, K) float32: clicks 1
        where the slot was clicked or bought from (a purchase from a banner implies its click), units
        summed over purchases, revenue = price * units summed. ``n_products`` (if given) checks every
        product id is in the catalogue.
        """
        imps = self.impressions
        b = len(imps)
        k = len(imps[0].items) if imps else BANNER_SIZE
        odd = next((i for i in imps if len(i.items) != k), None)
        if odd is not None:
            raise ValueError(
                f"impression {odd.impression_id!r}.items: {len(odd.items)} products, but this batch's banners "
                f"have {k} (select one banner size first, see ``of_banner_size``)"
            )
        items = np.fromiter(itertools.chain.from_iterable(i.items for i in imps), np.int64, b * k)
        items = items.reshape(b, k)
        viewed = np.fromiter((i.viewed for i in imps), np.int64, b)
        lengths = np.fromiter((len(i.history) for i in imps), np.int64, b)
        flat = np.fromiter(
            itertools.chain.from_iterable(i.history for i in imps), np.int64, int(lengths.sum())
        )
        history = np.full((b, HISTORY_LEN), PAD, np.int64)
        history[np.arange(HISTORY_LEN) < lengths[:, None]] = flat
        log_prob = np.fromiter((i.log_propensity for i in imps), np.float64, b)
        if n_products is not None:
            for name, ids in (("viewed", viewed[:, None]), ("history", history), ("items", items)):
                bad = ids >= n_products
                if bad.any():
                    row = int(bad.any(1).argmax())
                    raise ValueError(
                        f"impression {imps[row].impression_id!r}.{name}: product id "
                        f"{int(ids[row][bad[row]][0])} is outside the catalogue [0, {n_products})"
                    )

        fb = self.feedback
        rows = self._feedback_rows()
        pos = np.fromiter((f.position for f in fb), np.int64, len(fb))
        product = np.fromiter((f.product_id for f in fb), np.int64, len(fb))
        units = np.fromiter((f.units for f in fb), np.float64, len(fb))
        price = np.fromiter((f.price for f in fb), np.float64, len(fb))
        if (pos >= k).any():
            f = fb[int((pos >= k).argmax())]
            raise ValueError(
                f"feedback {f.event_id!r}.position: {f.position} is outside a {k}-product banner"
            )
        wrong = items[rows, pos] != product
        if wrong.any():
            f = fb[int(wrong.argmax())]
            raise ValueError(
                f"feedback {f.event_id!r}.product_id: {f.product_id} is not at position {f.position} "
                f"of impression {f.impression_id!r}"
            )
        clicks = np.zeros((b, k), np.float32)
        clicks[rows, pos] = 1.0
        out_units = np.zeros((b, k), np.float64)
        revenue = np.zeros((b, k), np.float64)
        np.add.at(out_units, (rows, pos), units)
        np.add.at(revenue, (rows, pos), units * price)

        t = torch.from_numpy
        return LoggedBatch(
            ContextBatch(t(viewed), t(history)),
            BannerBatch(t(items), t(log_prob.astype(np.float32))),
            OutcomeBatch(t(clicks), t(out_units.astype(np.float32)), t(revenue.astype(np.float32))),
        )

    def of_banner_size(self, k: int) -> ReadBatch:
        """The impressions with k-product banners and their feedback (same offset): a server answers
        requests for shorter banners (``k`` below the model's K), and a batch of tensors holds one K."""
        if all(len(i.items) == k for i in self.impressions):
            return self
        imps = [i for i in self.impressions if len(i.items) == k]
        keep = {i.impression_id for i in imps}
        return ReadBatch(imps, [f for f in self.feedback if f.impression_id in keep], self.offset)

    def _feedback_rows(self) -> np.ndarray:
        """(F,) row in ``impressions`` of each feedback's impression (vectorised id lookup)."""
        if not self.feedback:
            return np.zeros(0, np.int64)
        fb_ids = np.array([f.impression_id for f in self.feedback], dtype=str)
        ids = np.array([i.impression_id for i in self.impressions] or [""], dtype=str)
        order = np.argsort(ids, kind="stable")
        rows = order[np.minimum(np.searchsorted(ids[order], fb_ids), len(ids) - 1)]
        missing = (ids[rows] != fb_ids) | (len(self.impressions) == 0)
        if missing.any():
            f = self.feedback[int(missing.argmax())]
            raise ValueError(
                f"feedback {f.event_id!r}.impression_id: {f.impression_id!r} is not in this batch"
            )
        return rows.astype(np.int64)


def _check_consumer(consumer: object) -> str:
    if not isinstance(consumer, str) or not consumer or any(c.isspace() for c in consumer):
        raise ValueError(f"consumer: must be a non-empty string without spaces, got {consumer!r}")
    return consumer


def _check_records(values: object, cls: type, name: str) -> Sequence:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise TypeError(f"{name}: must be a sequence of {cls.__name__}, got {type(values).__name__}")
    for k, v in enumerate(values):
        if not isinstance(v, cls):
            raise TypeError(f"{name}[{k}]: must be a {cls.__name__}, got {type(v).__name__}")
    return values


class EventStore(ABC):
    """Durable, idempotent store of impressions and feedback with committed consumer offsets.

    Thread-safe: the FastAPI server calls the append methods from its thread pool; concurrent appends
    are group-committed (one transaction per batch of waiting callers, written by a single writer
    thread), and each call returns once its batch is durable. Public methods validate their arguments
    and delegate to the backend's ``_`` methods.
    """

    _closed: bool = False
    durability: str = "durable"  # "best-effort": acknowledged writes may not survive a server restart

    def append_impressions(self, items: Sequence[Impression]) -> int:
        """Store impressions; returns how many were new (a repeated ``impression_id`` is acknowledged
        and not stored again). Returns after the data is durable."""
        return self.append_impressions_nowait(items).result()

    def append_impressions_nowait(self, items: Sequence[Impression]) -> Future:
        """``append_impressions`` without the wait: a future of the count, resolved on the store's
        writer thread once the data is durable. Lets a caller that batches (the banner server) score
        its next batch while this one is being committed, instead of idling through the fsync."""
        self._check_open()
        _check_records(items, Impression, "impressions")
        if not len(items):
            done: Future = Future()
            done.set_result(0)
            return done
        return self._append_impressions(items)

    def append_feedback(self, events: Sequence[Feedback]) -> int:
        """Store feedback events; returns how many were new (idempotent by ``event_id``)."""
        self._check_open()
        _check_records(events, Feedback, "feedback")
        return self._append_feedback(events) if len(events) else 0

    def signing_secret(self) -> bytes:
        """A random 32-byte key made on the first call and kept in the store (durably, like an event).

        The banner server signs impression ids with it when no secret is configured: every server that
        shares this store then signs alike, and a restart keeps the key, so feedback on banners served
        before the restart still verifies. Whoever can write to the store could forge ids with it, but
        could equally write events directly, so it adds no exposure."""
        self._check_open()
        return self._signing_secret()

    def get_impression(self, impression_id: str) -> Impression | None:
        self._check_open()
        if not isinstance(impression_id, str):
            raise TypeError(f"impression_id: must be a string, got {impression_id!r}")
        return self._get_impression(impression_id)

    def read_ready(self, consumer: str, until_ts: float, limit: int) -> ReadBatch:
        """Up to ``limit`` impressions after ``consumer``'s committed offset, in append order, all with
        ``timestamp <= until_ts`` (stops at the first that is not), each joined with all its feedback.
        Reading does not move the offset: call ``commit(consumer, batch.offset)`` for that."""
        self._check_open()
        _check_consumer(consumer)
        until_ts = _float("read_ready", "until_ts", until_ts)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"read_ready.limit: must be an integer >= 1, got {limit!r}")
        return self._read_ready(consumer, until_ts, limit)

    def commit(self, consumer: str, offset: Offset) -> None:
        """Atomically and durably set ``consumer``'s offset. Offsets only move forward: committing one
        before the current committed offset raises ValueError (it would train twice on events)."""
        self._check_open()
        self._commit(_check_consumer(consumer), offset)

    def committed(self, consumer: str) -> Offset | None:
        """The consumer's committed offset, or None if it never committed."""
        self._check_open()
        return self._committed(_check_consumer(consumer))

    def count_impressions(self) -> int:
        self._check_open()
        return self._count_impressions()

    def count_feedback(self) -> int:
        self._check_open()
        return self._count_feedback()

    def close(self) -> None:
        """Finish pending appends and release connections. Idempotent."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__}: the event store is closed")

    @abstractmethod
    def _append_impressions(self, items: Sequence[Impression]) -> Future: ...

    @abstractmethod
    def _append_feedback(self, events: Sequence[Feedback]) -> int: ...

    @abstractmethod
    def _signing_secret(self) -> bytes: ...

    @abstractmethod
    def _get_impression(self, impression_id: str) -> Impression | None: ...

    @abstractmethod
    def _read_ready(self, consumer: str, until_ts: float, limit: int) -> ReadBatch: ...

    @abstractmethod
    def _commit(self, consumer: str, offset: Offset) -> None: ...

    @abstractmethod
    def _committed(self, consumer: str) -> Offset | None: ...

    @abstractmethod
    def _count_impressions(self) -> int: ...

    @abstractmethod
    def _count_feedback(self) -> int: ...

    @abstractmethod
    def _close(self) -> None: ...
