"""More than one server process: ``recsys-rl serve --workers N``, and two servers on one Redis stream.

Real processes on loopback ports, real stores (SQLite WAL shared by the workers; Redis under a unique
key prefix). Which process answered is read from the ``X-Worker-Pid`` header; a keep-alive connection
stays with the worker that accepted it, so a client per connection picks its worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch
import yaml

from recsys_rl.events import open_store
from serving.metrics import SYNC_INTERVAL_S
from tests.net import free_port, wait_ready
from tests.serving.helpers import drop_redis_prefix, unique_prefix
from tests.serving.test_crash import check_exactly_once

pytestmark = pytest.mark.slow

READY_TIMEOUT_S = 180.0  # N workers each import torch and load the model; the machine is shared


@contextmanager
def server(
    tmp_path: Path, policy_file: Path, events: str, name: str, workers: int, reload_interval_s: float = 0
) -> Iterator[tuple]:
    """``recsys-rl serve --workers N`` as its own process; yields (process, base URL) once ready."""
    port = free_port()
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "policy_path": str(policy_file),
                "events": events,
                "port": port,
                "reload_interval_s": reload_interval_s,
            }
        )
    )
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recsys_rl", "serve", "--config", str(cfg), "--workers", str(workers)],
            stdout=log,
            stderr=log,
            env={k: v for k, v in os.environ.items() if k != "RECSYS_RL_SECRET"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/readyz", proc, log_path.read_text, READY_TIMEOUT_S)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)


def pid(response: httpx.Response) -> int:
    return int(response.headers["x-worker-pid"])


def clients_by_worker(url: str, want: int, tries: int = 200) -> dict[int, httpx.Client]:
    """One keep-alive client per worker, for ``want`` distinct workers."""
    found: dict[int, httpx.Client] = {}
    for _ in range(tries):
        c = httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1))
        p = pid(c.get("/healthz"))
        if p in found:
            c.close()
        else:
            found[p] = c
        if len(found) == want:
            return found
        time.sleep(0.01)
    raise AssertionError(f"only {len(found)} of {want} workers answered in {tries} connections")


def banner(c: httpx.Client, user: int) -> dict:
    r = c.post("/v1/banners", json={"user_id": user, "viewed": user % 50, "history": [(user + 1) % 50]})
    assert r.status_code == 200, r.text
    return {**r.json(), "pid": pid(r)}


def click(b: dict, event_id: str) -> dict:
    return {
        "event_id": event_id,
        "impression_id": b["impression_id"],
        "type": "click",
        "product_id": b["items"][0],
    }


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def cross_worker_feedback(tmp_path: Path, policy_file: Path, events: str) -> None:
    with server(tmp_path, policy_file, events, "workers", workers=2) as (_, url):
        (a, ca), (b, cb) = clients_by_worker(url, 2).items()
        served = [banner(ca, 1), banner(cb, 2), banner(ca, 3)]
        assert [s["pid"] for s in served] == [a, b, a]
        # feedback on each banner through the *other* worker: same secret, same store
        for s, other in zip(served, (cb, ca, cb), strict=True):
            r = other.post("/v1/feedback", json={"events": [click(s, f"x-{s['impression_id']}")]})
            assert r.status_code == 200 and r.json() == {"accepted": 1, "duplicates": 0}, r.text
            assert pid(r) != s["pid"]
        again = ca.post("/v1/feedback", json=click(served[1], f"x-{served[1]['impression_id']}"))
        assert again.json() == {"accepted": 0, "duplicates": 1}  # idempotent across workers too
        # /metrics from either worker is the sum over both (prometheus multiprocess mode); each
        # worker publishes its model state within SYNC_INTERVAL_S
        time.sleep(2 * SYNC_INTERVAL_S)
        for c in (ca, cb):
            text = c.get("/metrics").text
            assert metric(text, 'recsys_banners_served_total{mode="explore"}') == 3.0, text
            assert metric(text, "recsys_feedback_events_written_total") == 3.0
            assert metric(text, "recsys_feedback_duplicates_total") == 1.0
            assert metric(text, "recsys_model_loaded") == 1.0
            info = [line for line in text.splitlines() if line.startswith("recsys_model_info{")]
            assert {f'pid="{a}"' in line or f'pid="{b}"' in line for line in info} == {True} and len(
                info
            ) == 2
        for c in (ca, cb):
            c.close()
    with open_store(events) as store:
        assert store.count_impressions() == 3 and store.count_feedback() == 3


def test_feedback_on_a_banner_is_accepted_by_another_worker(tmp_path, policy_file, events_uri):
    cross_worker_feedback(tmp_path, policy_file, events_uri)


def served_versions(url: str) -> dict[str, str]:
    """pid -> the version that worker serves, from the aggregated /metrics."""
    out = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("recsys_model_info{") and line.endswith(" 1.0"):
            labels = dict(
                kv.split("=", 1) for kv in line[len("recsys_model_info{") : line.index("}")].split(",")
            )
            out[labels["pid"].strip('"')] = labels["version"].strip('"')
    return out


def test_each_worker_hot_swaps_on_its_own(tmp_path, policy_file):
    """A new model in the followed source reaches every worker, each by its own poll."""
    from recsys_rl.policy import save_policy
    from tests.serving.helpers import tiny_policy

    with server(tmp_path, policy_file, f"sqlite:///{tmp_path}/events.db", "swap", 2, 0.5) as (_, url):
        time.sleep(2 * SYNC_INTERVAL_S)
        before = served_versions(url)
        assert len(before) == 2 and len(set(before.values())) == 1, before
        save_policy(tiny_policy(seed=7), policy_file.with_suffix(".new"))
        policy_file.with_suffix(".new").replace(policy_file)  # atomic, as a deploy would
        deadline = time.monotonic() + 60
        while True:
            after = served_versions(url)
            if len(after) == 2 and not set(after.values()) & set(before.values()):
                break
            assert time.monotonic() < deadline, (before, after)
            time.sleep(0.5)
        for p, c in clients_by_worker(url, 2).items():  # and each serves banners from it
            b = banner(c, 1)
            assert b["pid"] == p and b["model_version"] == after[str(p)]
            c.close()


THREADS = 6
KILL_AFTER = 120  # acknowledged banners before one worker is killed
AFTER_KILL = 120  # acknowledged banners still needed after the kill


def kill_one_worker(tmp_path: Path, policy_file: Path, events: str) -> None:
    with server(tmp_path, policy_file, events, "workers", workers=2) as (proc, url):
        workers = clients_by_worker(url, 2)
        victim = next(iter(workers))
        for c in workers.values():
            c.close()
        acked_imps: list[str] = []
        acked_events: list[str] = []
        after_kill: list[str] = []
        killed = False

        def load(t: int) -> None:
            deadline = time.monotonic() + 120
            c = httpx.Client(base_url=url, timeout=10)
            k = 0
            while time.monotonic() < deadline and len(after_kill) < AFTER_KILL:
                k += 1
                try:
                    b = banner(c, t * 1000 + k)
                    acked_imps.append(b["impression_id"])
                    if killed:
                        after_kill.append(b["impression_id"])
                    ev = [click(b, uuid.uuid4().hex)]
                    if c.post("/v1/feedback", json={"events": ev}).status_code == 200:
                        acked_events.append(ev[0]["event_id"])
                except (httpx.HTTPError, AssertionError):
                    c.close()  # the connection's worker died: reconnect (to a live one)
                    c = httpx.Client(base_url=url, timeout=10)
            c.close()

        with ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(load, t) for t in range(THREADS)]
            while len(acked_imps) < KILL_AFTER and not all(f.done() for f in futures):
                time.sleep(0.005)
            os.kill(victim, signal.SIGKILL)
            killed = True
            for f in futures:
                f.result()
        assert len(after_kill) >= AFTER_KILL, "the surviving worker stopped serving"
        assert proc.poll() is None, "the master died with its worker"
        # uvicorn's supervisor starts a replacement; the dead worker leaves the per-worker metrics
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            text = httpx.get(f"{url}/metrics").text
            info = [line for line in text.splitlines() if line.startswith("recsys_model_info{")]
            if len(info) == 2 and not any(f'pid="{victim}"' in line for line in info):
                break
            assert time.monotonic() < deadline, f"no replacement worker for {victim}:\n{info}"
            time.sleep(0.5)
    check_exactly_once(events, acked_imps, acked_events)


def test_sigkill_of_one_worker_loses_no_acknowledged_event(tmp_path, policy_file, events_uri):
    kill_one_worker(tmp_path, policy_file, events_uri)


@pytest.mark.redis
def test_two_servers_on_one_redis_stream_feed_one_online_trainer(tmp_path):
    """The shape of a multi-host deployment: two server processes (one port each, as two hosts would
    be) write one Redis stream; one online trainer consumes the impressions of both, each once."""
    from recsys_rl.finetune.live import OnlineTrainer
    from recsys_rl.policy import BannerPolicy, save_policy
    from tests.recsys_rl.finetune.test_live import config as online_config
    from tests.recsys_rl.helpers import POLICY, SMALL

    torch.manual_seed(0)
    reference = BannerPolicy(SMALL.n_products, POLICY.embed_dim, POLICY.hidden_dim).frozen_copy()
    policy_file = tmp_path / "reference.pt"
    save_policy(reference, policy_file)
    prefix = unique_prefix()
    events = f"redis://127.0.0.1:6379/0?prefix={prefix}&durability=best-effort"
    served: dict[str, list[dict]] = defaultdict(list)
    try:
        with (
            server(tmp_path, policy_file, events, "host-a", workers=1) as (_, url_a),
            server(tmp_path, policy_file, events, "host-b", workers=1) as (_, url_b),
        ):
            for url in (url_a, url_b):
                with httpx.Client(base_url=url) as c:
                    for u in range(60):
                        b = banner(c, u)
                        served[url].append(b)
                        r = c.post("/v1/feedback", json=click(b, f"{url}-{u}"))
                        assert r.status_code == 200, r.text
            # a banner from host a, its feedback posted to host b (one secret, kept in the stream)
            with httpx.Client(base_url=url_b) as c:
                r = c.post("/v1/feedback", json=click(served[url_a][0], "a-to-b"))
                assert r.json() == {"accepted": 1, "duplicates": 0}, r.text
        with open_store(events) as store:
            cfg = online_config(tmp_path, batch_size=1000, min_batch=10, attribution_window_s=10)
            trainer = OnlineTrainer(cfg, store, reference, clock=lambda: time.time() + 60, log=lambda s: None)
            assert trainer.step() is not None and trainer.step() is None  # all of it, then nothing
            assert trainer.impressions == 120
            assert store.read_ready(cfg.online.consumer, time.time() + 60, 1000).impressions == []
            everything = store.read_ready("audit", time.time() + 60, 1000)
        ids = {i.impression_id for i in everything.impressions}
        assert ids == {b["impression_id"] for bs in served.values() for b in bs}
        assert len(everything.feedback) == 121
    finally:
        drop_redis_prefix(prefix)
