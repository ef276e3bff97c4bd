"""What each backend promises beyond the shared contract: SQLite's durability settings, Redis's
consumer-group bookkeeping and recovery from a flushed script cache."""

from __future__ import annotations

import sqlite3
import uuid

import pytest
import redis

from recsys_rl.events import RedisEventStore, SqliteEventStore
from tests.recsys_rl.events.conftest import REDIS_URL
from tests.recsys_rl.events.factories import click, imp


def test_sqlite_uses_wal_and_full_sync_and_the_documented_tables(tmp_path):
    with SqliteEventStore(tmp_path / "e.db") as s:
        assert s._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert s._conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    with sqlite3.connect(tmp_path / "e.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"impressions", "feedback", "consumers"} <= tables


@pytest.fixture
def redis_store():
    prefix = f"test-{uuid.uuid4().hex}"
    store = RedisEventStore(REDIS_URL, prefix=prefix, durability="best-effort")
    yield store
    store.close()
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.redis
def test_redis_commit_acks_exactly_the_committed_entries_of_the_consumer_group(redis_store):
    redis_store.append_impressions([imp(k, ts=float(k)) for k in range(6)])
    first = redis_store.read_ready("trainer-a", 1e9, 4)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    stream = f"{redis_store.prefix}:impressions"
    (group,) = client.xinfo_groups(stream)
    assert group["name"] == "trainer-a" and group["pending"] == 4
    partial = redis_store.read_ready("trainer-a", 1e9, 2)
    redis_store.commit("trainer-a", partial.offset)
    assert client.xinfo_groups(stream)[0]["pending"] == 2  # the other two read, not yet committed
    assert [i.impression_id for i in redis_store.read_ready("trainer-a", 1e9, 10).impressions] == [
        f"imp-{k}" for k in range(2, 6)
    ]
    assert first.offset != partial.offset
    client.close()


@pytest.mark.redis
def test_redis_appends_survive_a_flushed_script_cache(redis_store):
    a = imp("a")
    assert redis_store.append_impressions([a]) == 1
    redis.Redis.from_url(REDIS_URL).script_flush()  # what a Redis restart does to cached scripts
    assert redis_store.append_impressions([a, imp("b")]) == 1
    assert redis_store.append_feedback([click(1, a, 0), click(1, a, 0)]) == 1
    redis_store.commit("t", redis_store.read_ready("t", 1e9, 10).offset)
    assert redis_store.count_impressions() == 2 and redis_store.count_feedback() == 1
