"""The SQLite store checkpoints its WAL on a thread of its own, so no acknowledged write waits for it,
and the database file still receives what was committed while the store stays open."""

from __future__ import annotations

import time

from recsys_rl.events import SqliteEventStore
from tests.recsys_rl.events.factories import imp


def _wait(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_committed_writes_reach_the_database_file_while_the_store_stays_open(tmp_path):
    path = tmp_path / "events.db"
    history = tuple(range(10))
    with SqliteEventStore(path) as store:
        start = path.stat().st_size
        for b in range(20):
            store.append_impressions([imp(f"{b}-{i}", history=history) for i in range(500)])
        assert store.count_impressions() == 10_000
        # ~2 MB of rows: more than SQLite's 1,000-page autocheckpoint, which the writer no longer runs
        assert _wait(lambda: path.stat().st_size > start + 1_000_000), (
            f"database file still {path.stat().st_size} bytes: the WAL was never checkpointed"
        )
        assert store.count_impressions() == 10_000
    with SqliteEventStore(path) as store:
        assert store.count_impressions() == 10_000


def test_checkpointer_stops_with_the_store(tmp_path):
    store = SqliteEventStore(tmp_path / "events.db")
    store.append_impressions([imp(1)])
    store.close()
    assert not store._checkpointer.is_alive()
