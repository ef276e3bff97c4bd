"""One suite, both backends (SQLite file, real Redis server): the EventStore contract."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from recsys_rl.events import Impression, SqliteEventStore, open_store
from recsys_rl.records import PAD
from tests.recsys_rl.events.factories import buy, click, imp


def ids(batch) -> list[str]:
    return [i.impression_id for i in batch.impressions]


def run_threads(n: int, target) -> list:
    """Run target(k) on n threads released together; returns their results in thread order."""
    barrier, results, errors = threading.Barrier(n), [None] * n, []

    def work(k):
        try:
            barrier.wait()
            results[k] = target(k)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def test_repeated_impressions_are_acknowledged_and_stored_once(store):
    a, b = imp("a"), imp("b")
    assert store.append_impressions([a, b, a]) == 2
    assert store.append_impressions([b, a]) == 0
    assert store.append_impressions([imp("c"), b]) == 1
    assert store.count_impressions() == 3
    assert ids(store.read_ready("t", 1e9, 10)) == ["imp-a", "imp-b", "imp-c"]


def test_non_blocking_appends_resolve_in_order_once_stored(store):
    futures = [store.append_impressions_nowait([imp(k, ts=float(k))]) for k in range(20)]
    futures.append(store.append_impressions_nowait([imp(3, ts=3.0)]))  # a repeat: acknowledged, not stored
    done_order = []
    for k, f in enumerate(futures):
        f.add_done_callback(lambda _, k=k: done_order.append(k))
    assert [f.result(timeout=30) for f in futures] == [1] * 20 + [0]
    assert done_order == sorted(done_order)  # one writer commits in submission order
    assert ids(store.read_ready("t", 1e9, 100)) == [f"imp-{k}" for k in range(20)]
    assert store.append_impressions_nowait([]).result() == 0
    with pytest.raises(TypeError, match=r"impressions\[0\]: must be a Impression"):
        store.append_impressions_nowait([{"impression_id": "x"}])  # refused at once, nothing queued
    assert store.count_impressions() == 20


def test_repeated_feedback_events_are_stored_once(store):
    a = imp("a")
    store.append_impressions([a])
    assert store.append_feedback([click(1, a, 0), click(1, a, 0), buy(2, a, 0, 1, 5.0)]) == 2
    assert store.append_feedback([buy(2, a, 0, 1, 5.0)]) == 0
    assert store.count_feedback() == 2
    assert len(store.read_ready("t", 1e9, 10).feedback) == 2


def test_concurrent_repeats_from_threads_and_store_objects_are_counted_once(reopen):
    stores = [reopen(), reopen()]  # two store objects = two server processes on one store
    impressions = [imp(k) for k in range(40)]
    events = [click(k, impressions[k], k % 5) for k in range(40)]

    def append_all(t):
        order = random.Random(t).sample(range(40), 40)
        s = stores[t % 2]
        new_imp = sum(s.append_impressions([impressions[k]]) for k in order)
        new_fb = s.append_feedback([events[k] for k in order])
        return new_imp, new_fb

    results = run_threads(8, append_all)
    assert sum(r[0] for r in results) == 40
    assert sum(r[1] for r in results) == 40
    assert stores[0].count_impressions() == 40
    assert stores[1].count_feedback() == 40


def test_get_impression_round_trips_every_field(store):
    a = Impression("a", 1_795_000_000.123456, 42, 7, (), (1, 2, 3, 4, 5), 0.0, -900.5, "m-3")
    b = Impression("b", 0.5, 0, 0, tuple(range(10, 20)), (9, 8, 7, 6, 5), 1.0, 0.0, "v")
    store.append_impressions([a, b])
    assert store.get_impression("a") == a
    assert store.get_impression("b") == b
    assert store.get_impression("missing") is None


def test_read_ready_returns_ready_impressions_in_append_order_up_to_limit(store):
    names = ["z", "a", "m", "b", "y", "c"]  # append order differs from id order
    store.append_impressions([imp(n, ts=10.0 + k) for k, n in enumerate(names)])
    assert ids(store.read_ready("t", 12.5, 10)) == ["imp-z", "imp-a", "imp-m"]
    assert ids(store.read_ready("t", 12.0, 10)) == ["imp-z", "imp-a", "imp-m"]  # <= until_ts
    assert ids(store.read_ready("t", 100.0, 2)) == ["imp-z", "imp-a"]
    empty = store.read_ready("t", 9.9, 10)
    assert ids(empty) == [] and empty.feedback == []
    assert ids(store.read_ready("t", 100.0, 10)) == [f"imp-{n}" for n in names]  # reading moves nothing


def test_impression_appended_out_of_time_order_is_delayed_never_skipped(store):
    store.append_impressions([imp("a", ts=100.0), imp("b", ts=200.0), imp("c", ts=50.0)])
    first = store.read_ready("t", 150.0, 10)
    assert ids(first) == ["imp-a"]  # c is ready but comes after b, which is not
    store.commit("t", first.offset)
    assert ids(store.read_ready("t", 150.0, 10)) == []
    second = store.read_ready("t", 250.0, 10)
    assert ids(second) == ["imp-b", "imp-c"]
    store.commit("t", second.offset)
    store.append_impressions([imp("late", ts=10.0)])  # arrives after newer ones were consumed
    assert ids(store.read_ready("t", 150.0, 10)) == ["imp-late"]


def test_reopened_store_resumes_exactly_after_committed_offset(reopen):
    reopen().append_impressions([imp(k, ts=float(k)) for k in range(10)])
    trained, k_next = [], 10
    for step in range(12):
        s = reopen()  # a restarted trainer: new store object, same file / prefix
        batch = s.read_ready("trainer", 1e9, 3)
        if step % 3 == 2:
            s.close()  # crash after reading, before committing: the batch must come back
            continue
        trained += ids(batch)
        s.commit("trainer", batch.offset)
        assert s.committed("trainer") == batch.offset
        s.append_impressions([imp(k_next, ts=float(k_next))])  # the server keeps appending meanwhile
        k_next += 1
        s.close()
    last = reopen()
    trained += ids(last.read_ready("trainer", 1e9, 100))
    assert trained == [f"imp-{k}" for k in range(k_next)]


def test_commit_only_moves_forward_and_consumers_are_independent(store):
    store.append_impressions([imp(k, ts=float(k)) for k in range(6)])
    assert store.committed("a") is None
    first = store.read_ready("a", 1e9, 2)
    second_start = store.read_ready("b", 1e9, 4)
    store.commit("a", first.offset)
    store.commit("a", first.offset)  # re-committing the same offset is fine
    more = store.read_ready("a", 1e9, 2)
    store.commit("a", more.offset)
    with pytest.raises(ValueError, match="commit.offset: .* is before the committed offset"):
        store.commit("a", first.offset)
    assert store.committed("a") == more.offset
    assert store.committed("b") is None
    assert ids(store.read_ready("b", 1e9, 4)) == ids(second_start)
    assert ids(store.read_ready("a", 1e9, 10)) == ["imp-4", "imp-5"]
    store.commit("c", more.offset)  # a consumer may start from an offset another one reached
    assert ids(store.read_ready("c", 1e9, 10)) == ["imp-4", "imp-5"]


def test_commit_rejects_an_offset_of_the_wrong_kind(store):
    bad = "1-0" if isinstance(store, SqliteEventStore) else 3
    with pytest.raises(ValueError, match="commit.offset"):
        store.commit("t", bad)
    with pytest.raises(ValueError, match="consumer"):
        store.commit("has space", store.read_ready("x", 0.0, 1).offset)


def test_empty_read_offset_commits_as_a_no_op(store):
    store.append_impressions([imp("a", ts=5.0)])
    empty = store.read_ready("t", 1.0, 10)
    store.commit("t", empty.offset)
    assert ids(store.read_ready("t", 10.0, 10)) == ["imp-a"]


def test_feedback_is_joined_to_its_impression_and_position(store):
    a, b, c, later = imp("a", ts=1.0), imp("b", ts=2.0), imp("c", ts=3.0), imp("later", ts=99.0)
    store.append_impressions([a, b, c, later])
    store.append_feedback([buy(1, c, 4, 2, 3.0), click(2, a, 1), click(3, later, 0), click(4, c, 4)])
    batch = store.read_ready("t", 10.0, 10)
    assert ids(batch) == ["imp-a", "imp-b", "imp-c"]
    got = {(f.event_id, f.impression_id, f.position) for f in batch.feedback}
    assert got == {("ev-1", "imp-c", 4), ("ev-2", "imp-a", 1), ("ev-4", "imp-c", 4)}
    out = batch.to_logged().outcomes
    expected_clicks = torch.zeros(3, 5)
    expected_clicks[0, 1] = expected_clicks[2, 4] = 1.0
    assert torch.equal(out.clicks, expected_clicks)
    assert out.units[2, 4] == 2.0 and out.units.sum() == 2.0
    assert out.revenue[2, 4] == 6.0 and out.revenue.sum() == 6.0


def test_to_logged_builds_padded_tensors_from_stored_events(store):
    a = imp("a", ts=1.0, history=(), items=(5, 4, 3, 2, 1), log_p=-1.5)
    b = imp("b", ts=2.0, history=tuple(range(20, 30)), items=(9, 8, 7, 6, 0), log_p=-7.25)
    store.append_impressions([a, b])
    store.append_feedback([buy(1, b, 0, 1, 2.5), buy(2, b, 0, 3, 2.5), buy(3, a, 2, 1, 10.0)])
    logged = store.read_ready("t", 10.0, 10).to_logged(n_products=30)
    assert len(logged) == 2
    assert logged.contexts.viewed.tolist() == [1, 1]
    assert logged.contexts.history.shape == (2, 10) and logged.contexts.history.dtype == torch.int64
    assert logged.contexts.history[0].tolist() == [PAD] * 10
    assert logged.contexts.history[1].tolist() == list(range(20, 30))
    assert logged.banners.items.tolist() == [[5, 4, 3, 2, 1], [9, 8, 7, 6, 0]]
    assert logged.banners.log_prob.tolist() == [-1.5, -7.25]
    assert logged.outcomes.clicks.tolist() == [[0, 0, 1, 0, 0], [1, 0, 0, 0, 0]]  # purchases imply clicks
    assert logged.outcomes.units.tolist() == [[0, 0, 1, 0, 0], [4, 0, 0, 0, 0]]
    assert logged.outcomes.revenue.tolist() == [[0, 0, 10, 0, 0], [10, 0, 0, 0, 0]]


def test_many_threads_appending_concurrently_all_land(store):
    n_threads, calls = 8, 25

    def append(t):
        for c in range(calls):
            batch = [imp(f"{t}-{c}-{j}", ts=float(c)) for j in range(2)]
            assert store.append_impressions(batch) == 2
            assert store.append_feedback([click(f"{t}-{c}-{j}", batch[j], j) for j in range(2)]) == 2

    run_threads(n_threads, append)
    total = n_threads * calls * 2
    assert store.count_impressions() == total
    assert store.count_feedback() == total
    batch = store.read_ready("t", 1e9, 10_000)
    assert len(set(ids(batch))) == total and len(batch.feedback) == total


def test_data_written_by_one_store_is_visible_after_close_and_reopen(reopen):
    with reopen() as s:
        s.append_impressions([imp("a", ts=1.0), imp("b", ts=2.0)])
        s.append_feedback([click(1, imp("a"), 3)])
        s.commit("t", s.read_ready("t", 1.5, 10).offset)
    s2 = reopen()
    assert s2.count_impressions() == 2 and s2.count_feedback() == 1
    assert s2.get_impression("imp-b") == imp("b", ts=2.0)
    assert ids(s2.read_ready("t", 10.0, 10)) == ["imp-b"]


def test_closed_store_refuses_calls(store):
    store.close()
    store.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        store.append_impressions([imp("a")])
    with pytest.raises(RuntimeError, match="closed"):
        store.read_ready("t", 1.0, 1)


def test_appends_reject_what_is_not_a_record_and_bad_read_arguments(store):
    with pytest.raises(TypeError, match=r"impressions\[1\]: must be a Impression"):
        store.append_impressions([imp("a"), {"impression_id": "b"}])
    with pytest.raises(TypeError, match="feedback: must be a sequence of Feedback"):
        store.append_feedback(click(1, imp("a"), 0))
    with pytest.raises(ValueError, match="read_ready.limit"):
        store.read_ready("t", 1.0, 0)
    with pytest.raises(ValueError, match="read_ready.until_ts"):
        store.read_ready("t", float("nan"), 5)
    assert store.count_impressions() == 0


CHILD = """
import sys, threading
from recsys_rl.events import open_store
from tests.recsys_rl.events.factories import imp, click

store = open_store(sys.argv[1])
lock = threading.Lock()

def write(t):
    k = 0
    while True:
        batch = [imp(f"{t}-{k}-{j}", ts=float(k)) for j in range(3)]
        store.append_impressions(batch)
        store.append_feedback([click(f"{t}-{k}", batch[0], 1)])
        with lock:
            sys.stdout.write(f"{t}-{k}\\n")
            sys.stdout.flush()
        k += 1

for t in range(4):
    threading.Thread(target=write, args=(t,), daemon=True).start()
threading.Event().wait()
"""


@pytest.mark.timeout(60)
def test_sqlite_acknowledged_appends_survive_sigkill(tmp_path):
    path = tmp_path / "events.db"
    root = Path(__file__).parents[3]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, f"sqlite:///{path}"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    acked = []
    try:
        with open_store(f"sqlite:///{path}") as reader:  # another process, reading while the child writes
            for line in child.stdout:
                acked.append(line.strip())
                if len(acked) == 100:
                    assert reader.count_impressions() >= 300
                    reader.commit("t", reader.read_ready("t", 1e9, 50).offset)
                if len(acked) >= 300:
                    break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert len(acked) >= 300, "the child process stopped before acknowledging 300 appends"
    with open_store(f"sqlite:///{path}") as s:
        for k in acked:
            assert s.get_impression(f"imp-{k}-2") is not None, k
        assert s.count_impressions() >= 3 * len(acked)
        assert s.count_feedback() >= len(acked)
        assert s.committed("t") is not None
        batch = s.read_ready("t2", 1e9, 100_000)
        assert {f.event_id for f in batch.feedback} >= {f"ev-{k}" for k in acked}
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_open_store_accepts_sqlite_uris_and_bare_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for uri, file in [
        (f"sqlite:///{tmp_path}/abs.db", tmp_path / "abs.db"),
        ("sqlite:///rel.db", tmp_path / "rel.db"),
        (str(tmp_path / "bare.db"), tmp_path / "bare.db"),
        ("sqlite:///normal.db?synchronous=normal", tmp_path / "normal.db"),
    ]:
        with open_store(uri) as s:
            assert isinstance(s, SqliteEventStore)
            s.append_impressions([imp("a")])
        assert file.exists(), uri


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "kafka://broker:9092/events",
            "event store uri 'kafka://broker:9092/events': unknown scheme 'kafka'",
        ),
        ("sqlite:///x.db?fsync=1", "event store uri 'sqlite:///x.db\\?fsync=1': unknown parameter"),
        ("sqlite://host/x.db", "event store uri 'sqlite://host/x.db': expected sqlite:///"),
        ("sqlite:///x.db?synchronous=off", "synchronous: must be one of"),
        ("sqlite:///no/such/dir/x.db", "directory 'no/such/dir' does not exist"),
        ("", "event store uri: must be a non-empty string"),
    ],
)
def test_open_store_rejects_bad_uris_naming_them(uri, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        open_store(uri)
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_redis_unreachable_server_is_a_clear_error():
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="redis://127.0.0.1:1/0: cannot reach Redis"):
        open_store("redis://127.0.0.1:1/0?prefix=x")
    assert time.monotonic() - start < 10


def test_the_signing_secret_is_made_once_and_shared_by_every_store_object(reopen):
    first = reopen()
    secret = first.signing_secret()
    assert isinstance(secret, bytes) and len(secret) == 32
    assert first.signing_secret() == secret
    with reopen() as other:  # another server on the same store, or this one after a restart
        assert other.signing_secret() == secret
    first.append_impressions([imp("a")])  # the key lives beside the events, not in their place
    assert first.count_impressions() == 1
    first.close()
    with reopen() as again:
        assert again.signing_secret() == secret
