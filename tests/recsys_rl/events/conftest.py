"""Fixtures running the event-store suite against both real backends (no fakes)."""

from __future__ import annotations

import uuid

import pytest
import redis

from recsys_rl.events import open_store

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_uri(request, tmp_path):
    """A fresh store location: a new SQLite file, or a unique Redis key prefix deleted afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/events.db"
        return
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail("no Redis server on 127.0.0.1:6379: start redis-server, or deselect with -m 'not redis'")
    prefix = f"test-{uuid.uuid4().hex}"
    yield f"{REDIS_URL}?prefix={prefix}&durability=best-effort"  # the shared Redis keeps nothing on disk
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def reopen(store_uri):
    """Open (another) store object on the same location; all are closed at teardown."""
    stores = []

    def _open():
        s = open_store(store_uri)
        stores.append(s)
        return s

    yield _open
    for s in stores:
        s.close()


@pytest.fixture
def store(reopen):
    return reopen()
