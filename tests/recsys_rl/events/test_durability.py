"""Redis durability made explicit: the store reads the server's persistence settings at start and
refuses one that would lose acknowledged writes on a restart, unless told best-effort; and it rides
through a Redis restart (SIGKILL) without losing or doubling anything acknowledged."""

from __future__ import annotations

import logging
import uuid

import pytest
import redis

from benchmarks._services import RedisServer
from recsys_rl.events import DurabilityError, StoreUnavailable, open_store
from tests.recsys_rl.events.conftest import REDIS_URL
from tests.recsys_rl.events.factories import click, imp


@pytest.mark.redis
def test_refuses_the_shared_redis_that_keeps_nothing_on_disk():
    with pytest.raises(DurabilityError, match="appendonly is no.*best-effort"):
        open_store(f"{REDIS_URL}?prefix=test-refuse-{uuid.uuid4().hex}")


@pytest.mark.redis
def test_best_effort_opens_it_and_warns_once(caplog):
    with caplog.at_level(logging.WARNING, "recsys_rl.events"):
        with open_store(f"{REDIS_URL}?prefix=test-be-{uuid.uuid4().hex}&durability=best-effort") as s:
            assert s.durability == "best-effort"
    assert sum("durability best-effort" in r.message for r in caplog.records) == 1


def test_aof_always_is_durable_and_everysec_is_refused(tmp_path):
    with RedisServer(tmp_path / "always") as server:
        with open_store(f"{server.url}?prefix=t") as s:
            assert s.durability == "durable" and s.persistence.durable
    with RedisServer(tmp_path / "everysec", appendfsync="everysec") as server:
        with pytest.raises(DurabilityError, match="appendfsync is everysec"):
            open_store(f"{server.url}?prefix=t")


def test_acknowledged_appends_survive_a_redis_sigkill_and_the_store_recovers_by_itself(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        store = open_store(f"{server.url}?prefix=t")
        try:
            acked = [imp(k) for k in range(50)]
            assert store.append_impressions(acked) == 50
            assert store.append_feedback([click(1, acked[0], 0)]) == 1
            server.kill()
            with pytest.raises(StoreUnavailable, match=f"event store {server.url}"):
                store.append_impressions([imp("during")])
            with pytest.raises(StoreUnavailable):
                store.append_feedback([click(2, acked[1], 0)])
            server.start()  # same port, same directory: the AOF is read back
            # the same store object, same writer thread: no restart of ours needed
            assert store.append_impressions([imp("after"), acked[3]]) == 1  # a repeat is stored once
            assert store.append_feedback([click(1, acked[0], 0), click(3, acked[2], 0)]) == 1
            batch = store.read_ready("t", 1e12, 1000)
            ids = [i.impression_id for i in batch.impressions]
            assert ids[:50] == [i.impression_id for i in acked] and ids[50:] in (
                ["imp-after"],
                ["imp-during", "imp-after"],
            )
            assert len(ids) == len(set(ids)) == store.count_impressions()
            assert {f.event_id for f in batch.feedback} >= {click(1, acked[0], 0).event_id}
            client = redis.Redis.from_url(server.url)
            assert client.xlen("t:impressions") == client.hlen("t:imp")  # one stream entry per impression
            client.close()
        finally:
            store.close()
