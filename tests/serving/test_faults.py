"""Faults of what the service depends on, with real processes: a Redis SIGKILLed and restarted under
load, and a SQLite store on a disk that fills up and frees again. While the store is down the service
answers 503 with Retry-After (never a banner it did not log, never an acknowledgement it did not
store) and it recovers by itself; afterwards every acknowledged impression and event is stored once."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter

import httpx
import pytest
import redis

from benchmarks._services import RedisServer
from recsys_rl.events import open_store
from serving.app import create_app
from tests.serving.helpers import N_PRODUCTS, config, running_server, tiny_holder


class Load:
    """Client threads asking for banners and posting a click for each, recording what was acknowledged."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url, self.stop = url, threading.Event()
        self.statuses: Counter = Counter()
        self.acked_imps: list[str] = []
        self.acked_events: list[str] = []
        self.unavailable: list[httpx.Response] = []
        self.last_ok = 0.0
        self.errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._run, args=(k,)) for k in range(threads)]

    def _record(self, r: httpx.Response) -> bool:
        self.statuses[r.status_code] += 1
        if r.status_code == 503:
            self.unavailable.append(r)
        ok = r.status_code == 200
        if ok:
            self.last_ok = time.monotonic()
        return ok

    def _run(self, k: int) -> None:
        try:
            self._drive(k)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)
            raise

    def _drive(self, k: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            n = 0
            while not self.stop.is_set():
                n += 1
                r = http.post("/v1/banners", json={"user_id": k, "viewed": n % N_PRODUCTS, "history": [1, 2]})
                if not self._record(r):
                    time.sleep(0.02)
                    continue
                banner = r.json()
                self.acked_imps.append(banner["impression_id"])
                event = {
                    "event_id": uuid.uuid4().hex,
                    "impression_id": banner["impression_id"],
                    "type": "click",
                    "product_id": banner["items"][0],
                }
                if self._record(http.post("/v1/feedback", json={"events": [event]})):
                    self.acked_events.append(event["event_id"])

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(60)


def assert_503s_ask_to_retry(load: Load, store_name: str) -> None:
    assert not load.errors, load.errors
    assert load.unavailable, "the outage produced no 503: it was not exercised"
    assert set(load.statuses) <= {200, 503}, load.statuses
    for r in load.unavailable:
        assert r.headers["retry-after"] == "1"
        assert store_name in r.json()["detail"][0]["message"], r.text


def test_a_redis_restart_under_load_loses_and_doubles_nothing_acknowledged(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        uri = f"{server.url}?prefix=t"
        app = create_app(config(tmp_path, events=uri), holder=tiny_holder())  # durable: AOF always
        with running_server(app) as url, Load(url) as load:
            time.sleep(1.5)
            served_before = len(load.acked_imps)
            server.kill()
            time.sleep(1.0)
            server.start()
            restarted = time.monotonic()
            time.sleep(2.0)
            assert load.last_ok > restarted, ("no banner served after Redis came back", load.errors)
        assert served_before > 0 and len(load.acked_imps) > served_before
        assert_503s_ask_to_retry(load, server.url)
        with open_store(uri) as store:
            everything = store.read_ready("check", 1e12, 10**6)
            imps = [i.impression_id for i in everything.impressions]
            events = {f.event_id for f in everything.feedback}
        assert set(load.acked_imps) <= set(imps) and len(imps) == len(set(imps))
        assert set(load.acked_events) <= events
        client = redis.Redis.from_url(server.url)
        assert client.xlen("t:impressions") == client.hlen("t:imp") == len(imps)
        client.close()


@contextlib.contextmanager
def small_disk(path, size="16m"):
    """A tmpfs of its own. Bigger than the WAL's working size (SQLite checkpoints at 1,000 pages, ~4 MB):
    on a 4 MB disk the WAL, growing back into the space the filler left, could take the whole disk,
    and its checkpoint then had no room to grow the database file — a disk too small ever to write
    again, not an outage that ends."""
    path.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a small tmpfs here: {exc}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk) -> None:
    """Take every free byte of ``disk`` (a filler file written until ENOSPC)."""
    with open(disk / "filler", "wb", buffering=0) as f:
        for block in (65536, 512):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * block)


def test_a_full_disk_answers_503_naming_the_store_and_recovers_when_space_returns(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        db = disk / "events.db"
        store = open_store(f"sqlite:///{db}")
        try:
            app = create_app(config(tmp_path), store=store, holder=tiny_holder())
            with running_server(app) as url, Load(url, threads=2) as load:
                time.sleep(1.0)
                fill(disk)
                deadline = time.monotonic() + 30
                while not load.unavailable and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(0.5)
                (disk / "filler").unlink()
                freed = time.monotonic()
                deadline = freed + 15  # recovery is automatic; a loaded 2-core machine may take seconds
                while load.last_ok <= freed and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert load.last_ok > freed, (
                    "no banner served after space returned",
                    load.statuses,
                    load.errors,
                    load.unavailable[-1].text if load.unavailable else None,
                    {p.name: p.stat().st_size for p in disk.iterdir()},
                    shutil.disk_usage(disk),
                )
            assert_503s_ask_to_retry(load, f"event store sqlite:///{db}: disk full")
            assert store.count_impressions() == len(set(load.acked_imps))  # nothing half-written
            assert store.get_impression(load.acked_imps[-1]) is not None
        finally:
            store.close()
        import sqlite3

        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = {r[0] for r in conn.execute("SELECT impression_id FROM impressions")}
            events = {r[0] for r in conn.execute("SELECT event_id FROM feedback")}
        assert set(load.acked_imps) <= stored and set(load.acked_events) <= events
