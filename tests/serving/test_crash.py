"""Durability under SIGKILL: every impression and feedback event the server acknowledged (a 2xx
reached the client) before it was killed mid-load is in the store after a restart, exactly once.

The real ``python -m recsys_rl serve`` process on a loopback port, a bounded load from a thread pool
(at most WORKERS x ROUNDS banner + feedback pairs, and ``LOAD_TIMEOUT_S``), SIGKILL once enough has
been acknowledged, a restart on the same store (which must come up and serve), then a count by id of
everything in the store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from recsys_rl.events import open_store
from tests.net import free_port, wait_ready
from tests.serving.helpers import SECRET

pytestmark = pytest.mark.slow

WORKERS = 8
ROUNDS = 60  # banner + feedback pairs per worker at most
KILL_AFTER_IMPRESSIONS = 150  # acknowledged banners before the kill
MIN_EVENTS = 50  # acknowledged feedback events needed for the run to count
LOAD_TIMEOUT_S = 30.0


@contextmanager
def server(tmp_path: Path, policy_file: Path, events: str, name: str):
    """``recsys-rl serve --config`` as its own process; yields (process, base URL) once ready."""
    port = free_port()
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "policy_path": str(policy_file),
                "events": events,
                "port": port,
                "secret": SECRET,
                "reload_interval_s": 0,
                "seed": 0,
            }
        )
    )
    log = open(tmp_path / f"{name}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys_rl", "serve", "--config", str(cfg)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/readyz", proc, (tmp_path / f"{name}.log").read_text)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        log.close()


def load_until_killed(proc: subprocess.Popen, url: str) -> tuple[list[tuple[str, int]], list[str], int]:
    """Banner + feedback traffic; SIGKILL the server once KILL_AFTER_IMPRESSIONS banners are acknowledged.
    Returns (acknowledged (impression id, first product)s, acknowledged event ids, workers cut off)."""
    imps: list[tuple[str, int]] = []  # (impression id, its first product)
    events: list[str] = []
    cut_off: list[int] = []

    def worker(w: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            for k in range(ROUNDS):
                try:
                    r = http.post(
                        "/v1/banners", json={"user_id": w, "viewed": k % 50, "history": [(k + 1) % 50]}
                    )
                    if r.status_code != 200:
                        continue
                    b = r.json()
                    imps.append((b["impression_id"], b["items"][0]))
                    batch = [
                        {
                            "event_id": uuid.uuid4().hex,
                            "impression_id": b["impression_id"],
                            "type": "click",
                            "product_id": b["items"][k % 5],
                        },
                        {
                            "event_id": uuid.uuid4().hex,
                            "impression_id": b["impression_id"],
                            "type": "purchase",
                            "product_id": b["items"][k % 5],
                            "units": 1,
                            "price": 1.5,
                        },
                    ]
                    r = http.post("/v1/feedback", json={"events": batch})
                    if r.status_code == 200:
                        events.extend(e["event_id"] for e in batch)
                except httpx.HTTPError:
                    cut_off.append(w)
                    return

    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(worker, w) for w in range(WORKERS)]
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while len(imps) < KILL_AFTER_IMPRESSIONS and time.monotonic() < deadline:
            assert not all(f.done() for f in futures), "the load ended before the kill"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        for f in futures:
            f.result()
    return list(imps), list(events), len(set(cut_off))


def check_exactly_once(events_uri: str, acked_imps: list[str], acked_events: list[str]) -> None:
    with open_store(events_uri) as store:
        everything = store.read_ready("crash-check", time.time() + 1e6, 1_000_000)
    imp_count = Counter(i.impression_id for i in everything.impressions)
    fb_count = Counter(f.event_id for f in everything.feedback)
    missing_imps = [i for i in acked_imps if imp_count[i] != 1]
    missing_events = [e for e in acked_events if fb_count[e] != 1]
    assert not missing_imps, f"{len(missing_imps)} acknowledged impressions not stored exactly once"
    assert not missing_events, f"{len(missing_events)} acknowledged events not stored exactly once"
    assert max(imp_count.values()) == 1 and max(fb_count.values()) == 1  # nothing stored twice


def crash_and_recover(tmp_path: Path, policy_file: Path, events_uri: str) -> None:
    with server(tmp_path, policy_file, events_uri, "first") as (proc, url):
        acked_imps, acked_events, cut_off = load_until_killed(proc, url)
    assert proc.returncode == -signal.SIGKILL
    with server(tmp_path, policy_file, events_uri, "restarted") as (_, url):
        b = httpx.post(f"{url}/v1/banners", json={"user_id": 1, "viewed": 2}).json()
        old, product = acked_imps[0]  # a banner served before the crash: its id still verifies
        fb = [{"event_id": "after-restart", "impression_id": old, "type": "click", "product_id": product}]
        r = httpx.post(f"{url}/v1/feedback", json={"events": fb})
        assert r.status_code == 200 and r.json() == {"accepted": 1, "duplicates": 0}, r.text
    ids = [i for i, _ in acked_imps] + [b["impression_id"]]
    check_exactly_once(events_uri, ids, acked_events + ["after-restart"])
    # the run counts only if the kill landed mid-load, with feedback flowing
    assert len(acked_events) >= MIN_EVENTS and cut_off >= 1, (len(acked_events), cut_off)


def test_acknowledged_events_survive_sigkill(tmp_path, policy_file, events_uri):
    crash_and_recover(tmp_path, policy_file, events_uri)
