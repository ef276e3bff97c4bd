"""Event store of the live path: impressions and feedback in, ready joined batches out.

``open_store(uri)`` picks the backend: SQLite (embedded default) or Redis Streams (distributed).
"""

from recsys_rl.events.base import (
    DurabilityError,
    EventStore,
    Feedback,
    Impression,
    Offset,
    ReadBatch,
    StoreUnavailable,
)
from recsys_rl.events.redis_store import RedisEventStore
from recsys_rl.events.sqlite_store import SqliteEventStore
from recsys_rl.events.uri import open_store

__all__ = [
    "DurabilityError",
    "StoreUnavailable",
    "EventStore",
    "Feedback",
    "Impression",
    "Offset",
    "ReadBatch",
    "RedisEventStore",
    "SqliteEventStore",
    "open_store",
]
