"""Open an event store from a URI, the one string that configs and CLI flags carry.

- ``sqlite:///events.db`` (relative) or ``sqlite:////var/lib/recsys/events.db`` (absolute), the
  convention of SQLAlchemy and MLflow, or a bare file path; optional ``?synchronous=full|normal``.
- ``redis://host:port/db?prefix=name`` (also ``rediss://``); ``prefix`` defaults to ``recsys_rl``;
  ``durability=best-effort`` opens it on a Redis that would lose acknowledged writes on a restart
  (refused otherwise, see ``redis_durability``); the other query parameters go to redis-py.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from recsys_rl.events.base import DURABILITY, EventStore
from recsys_rl.events.redis_store import RedisEventStore
from recsys_rl.events.sqlite_store import SqliteEventStore

DEFAULT_PREFIX = "recsys_rl"


def open_store(uri: str, *, durability: str | None = None) -> EventStore:
    """The event store that ``uri`` names. Unknown scheme or malformed URI -> ValueError naming it.

    ``durability`` (``durable`` | ``best-effort``, default durable) is what a config asks of a Redis
    store; a ``durability`` parameter in the URI wins over it. SQLite's guarantee is set by its
    ``synchronous`` parameter instead."""
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"event store uri: must be a non-empty string, got {uri!r}")
    if "://" not in uri:
        return SqliteEventStore(uri)
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "sqlite":
        if parts.netloc or not parts.path[1:]:
            raise ValueError(
                f"event store uri {uri!r}: expected sqlite:///relative/path or sqlite:////abs/path"
            )
        sync = query.pop("synchronous", "full").lower()
        if query:
            raise ValueError(
                f"event store uri {uri!r}: unknown parameter(s) {sorted(query)}; known: synchronous"
            )
        return SqliteEventStore(parts.path[1:], synchronous=sync)
    if scheme in ("redis", "rediss"):
        prefix = query.pop("prefix", DEFAULT_PREFIX)
        wanted = query.pop("durability", durability or "durable")
        if wanted not in DURABILITY:
            raise ValueError(
                f"event store uri {uri!r}: durability: must be one of {DURABILITY}, got {wanted!r}"
            )
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
        return RedisEventStore(url, prefix=prefix, durability=wanted)
    raise ValueError(
        f"event store uri {uri!r}: unknown scheme {parts.scheme!r}; "
        "expected sqlite:///path, a file path, or redis://host:port/db?prefix=name"
    )
