"""Soak test of the banner service: sustained mixed traffic with model swaps, on loopback.

Starts ``python -m recsys_rl serve`` as its own process (one uvicorn worker, a BannerPolicy file
followed by the FileSource, polled every second, and a SQLite store in a temporary directory, or
``--events`` for another store such as ``redis://127.0.0.1:6379/0?prefix=soak``), then for
``--duration`` seconds drives it from a pool of client threads (httpx, keep-alive): each thread asks
for a banner, then posts feedback for about half of them (a click, sometimes with a purchase, fresh
event ids). Every ``--swap-every`` seconds the policy file is replaced (atomically, a new model), so
the server hot-swaps under load. After a 3 s warm-up (not counted) the server's VmRSS is read; it
is read again at the end, under the same load.

Measured: requests answered (banner + feedback), 5xx answers, p99 latency over all requests,
events lost (feedback ids acknowledged with 2xx but not in the store once the server has stopped)
and RSS growth. Transport errors (no answer at all) and the model versions seen are printed on
the lines before the last. Exits 1 on any 5xx, transport error or lost event.

    python benchmarks/soak.py [--duration 60] [--swap-every 30] [--threads 8] [--n-products 1000]

Last line: ``soak: requests=<n> errors_5xx=<n> p99_ms=<x> lost_events=<n> rss_growth_mb=<x>``.

``--faults``: the store is a redis-server of the soak's own (AOF on, ``appendfsync always``, durable)
and the model is followed in an MLflow server of its own (swaps register new versions); at a third
of the duration the redis-server is SIGKILLed and restarted, at two thirds the MLflow server. A fault
window runs from the kill until the service answers 2xx again (to a request sent after the kill);
5xx answers outside every window are counted apart. Last line then adds
``faults=<n> errors_5xx_outside_faults=<n> recovery_s_max=<x>``; exits 1 on a 5xx outside a window,
a transport error or a lost event.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch
import yaml
from _net import free_port, wait_ready
from _services import MlflowServer, RedisServer

from recsys_rl.events import open_store
from recsys_rl.policy import BannerPolicy, save_policy

WARMUP_S = 3.0
HISTORY_LEN = 10


@dataclass
class ThreadStats:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    transport_errors: int = 0
    acked_events: list[str] = field(default_factory=list)
    acked_impressions: list[str] = field(default_factory=list)
    versions: Counter = field(default_factory=Counter)
    answers: list[tuple[float, float, int]] = field(default_factory=list)  # (sent, answered, status)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def write_policy(path: Path, n_products: int, seed: int) -> None:
    """A fresh model in ``path``, replaced atomically (the poller never reads a half-written file)."""
    torch.manual_seed(seed)
    tmp = path.with_suffix(".tmp")
    save_policy(BannerPolicy(n_products, 16, 32).eval(), tmp)
    os.replace(tmp, path)


def client(
    url: str, n_products: int, seed: int, stop: threading.Event, counting: threading.Event
) -> ThreadStats:
    """Banner requests, and feedback for about half of them, until ``stop``; counts only while
    ``counting`` is set (after the warm-up)."""
    rng = random.Random(seed)
    out = ThreadStats()
    with httpx.Client(base_url=url, timeout=10.0) as http:
        while not stop.is_set():
            history = rng.sample(range(n_products), rng.randint(0, HISTORY_LEN))
            body = {"user_id": rng.randrange(10**6), "viewed": rng.randrange(n_products), "history": history}
            banner = post(http, "/v1/banners", body, out, counting)
            if banner is None:
                continue
            if counting.is_set():
                out.acked_impressions.append(banner["impression_id"])
                out.versions[banner["model_version"]] += 1
            if rng.random() < 0.5:
                product = banner["items"][rng.randrange(5)]
                events = [
                    {
                        "event_id": uuid.uuid4().hex,
                        "impression_id": banner["impression_id"],
                        "type": "click",
                        "product_id": product,
                    }
                ]
                if rng.random() < 0.3:
                    events.append(
                        {
                            "event_id": uuid.uuid4().hex,
                            "impression_id": banner["impression_id"],
                            "type": "purchase",
                            "product_id": product,
                            "units": rng.randint(1, 3),
                            "price": round(rng.uniform(1, 50), 2),
                        }
                    )
                if (
                    post(http, "/v1/feedback", {"events": events}, out, counting) is not None
                    and counting.is_set()
                ):
                    out.acked_events.extend(e["event_id"] for e in events)
    return out


def post(
    http: httpx.Client, path: str, body: dict, out: ThreadStats, counting: threading.Event
) -> dict | None:
    t0 = time.perf_counter()
    sent = time.monotonic()
    try:
        r = http.post(path, json=body)
    except httpx.HTTPError:
        if counting.is_set():
            out.transport_errors += 1
        return None
    if counting.is_set():
        out.latencies.append(time.perf_counter() - t0)
        out.statuses[r.status_code] += 1
        out.answers.append((sent, time.monotonic(), r.status_code))
    return r.json() if 200 <= r.status_code < 300 else None


def stored_ids(events_uri: str) -> tuple[set[str], set[str]]:
    with open_store(events_uri) as store:
        everything = store.read_ready("soak-check", time.time() + 1e6, 10**8)
    return {i.impression_id for i in everything.impressions}, {f.event_id for f in everything.feedback}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of counted load (<= 300)")
    ap.add_argument("--swap-every", type=float, default=30.0, help="seconds between model swaps")
    ap.add_argument("--threads", type=int, default=8, help="client threads (one connection each)")
    ap.add_argument("--n-products", type=int, default=1000)
    ap.add_argument("--events", default=None, help="event store URI (default: SQLite in a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--faults", action="store_true", help="restart Redis and MLflow once each (see above)")
    args = ap.parse_args()
    if not 0 < args.duration <= 300:
        ap.error(f"--duration: between 0 and 300 seconds, got {args.duration:g}")
    if args.swap_every <= 0 or args.threads < 1 or args.n_products < 5:
        ap.error("--swap-every > 0, --threads >= 1 and --n-products >= 5")

    with tempfile.TemporaryDirectory(prefix="recsys-soak-") as tmp:
        tmp = Path(tmp)
        events_uri = args.events or f"sqlite:///{tmp}/events.db"
        policy = tmp / "policy.pt"
        write_policy(policy, args.n_products, args.seed)
        port = free_port()
        cfg = {
            "policy_path": str(policy),
            "events": events_uri,
            "port": port,
            "reload_interval_s": 1.0,
            "secret": uuid.uuid4().hex,
            "seed": args.seed,
        }
        services: list = []
        if args.faults:
            redis_server, mlflow_server = RedisServer(tmp / "redis"), MlflowServer(tmp / "mlflow")
            for svc in (redis_server, mlflow_server):
                svc.start(120)
                services.append(svc)
            events_uri = cfg["events"] = f"{redis_server.url}?prefix=soak"
            register(mlflow_server.url, policy)
            del cfg["policy_path"]
            cfg |= {"model_uri": "models:/soak-policy@champion", "tracking_uri": mlflow_server.url}
        faults: list[tuple[str, float]] = []  # (service, time of the kill)
        (tmp / "serve.yaml").write_text(yaml.safe_dump(cfg))
        log = open(tmp / "server.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "recsys_rl", "serve", "--config", str(tmp / "serve.yaml")],
            stdout=log,
            stderr=log,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc, timeout=90.0)
            stop, counting = threading.Event(), threading.Event()
            results: list[ThreadStats] = []
            threads = [
                threading.Thread(
                    target=lambda s=s: results.append(
                        client(url, args.n_products, args.seed * 1000 + s, stop, counting)
                    )
                )
                for s in range(args.threads)
            ]
            for t in threads:
                t.start()
            time.sleep(WARMUP_S)
            rss_start = rss_mb(proc.pid)
            counting.set()
            t0 = time.monotonic()
            swaps, next_swap = 0, t0 + args.swap_every
            plan = (
                [(t0 + args.duration / 3, redis_server), (t0 + 2 * args.duration / 3, mlflow_server)]
                if args.faults
                else []
            )
            while (now := time.monotonic()) < t0 + args.duration:
                if plan and now >= plan[0][0]:
                    svc = plan.pop(0)[1]
                    faults.append((svc.name, time.monotonic()))
                    svc.restart(120)  # SIGKILL, then start on the same port and data
                if now >= next_swap:
                    swaps += 1
                    write_policy(policy, args.n_products, args.seed + swaps)
                    if args.faults:
                        try:
                            register(mlflow_server.url, policy)
                        except Exception as exc:  # noqa: BLE001 - MLflow restarting: swap later
                            print(f"soak: swap skipped ({type(exc).__name__})")
                    next_swap += args.swap_every
                time.sleep(min(0.2, max(0.0, t0 + args.duration - now)))
            rss_end = rss_mb(proc.pid)
            elapsed = time.monotonic() - t0
            counting.clear()
            stop.set()
            for t in threads:
                t.join(30)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
        if len(results) != args.threads:
            raise RuntimeError(f"{args.threads - len(results)} client threads failed; see {tmp}/server.log")
        try:
            imps, events = stored_ids(events_uri)
        finally:
            for svc in services:
                svc.stop()

    latencies = np.concatenate([np.asarray(r.latencies) for r in results])
    statuses = sum((r.statuses for r in results), Counter())
    versions = sum((r.versions for r in results), Counter())
    transport = sum(r.transport_errors for r in results)
    acked_events = [e for r in results for e in r.acked_events]
    acked_imps = [i for r in results for i in r.acked_impressions]
    lost_events = sum(e not in events for e in acked_events)
    lost_imps = sum(i not in imps for i in acked_imps)
    n = len(latencies)
    errors_5xx = sum(c for s, c in statuses.items() if s >= 500)
    p99 = float(np.percentile(latencies, 99)) * 1e3 if n else float("nan")
    p50 = float(np.percentile(latencies, 50)) * 1e3 if n else float("nan")
    print(
        f"soak: statuses={dict(sorted(statuses.items()))} transport_errors={transport} "
        f"rps={n / elapsed:.0f} p50_ms={p50:.2f}"
    )
    print(
        f"soak: swaps={swaps} versions_served={len(versions)} acked_impressions={len(acked_imps)} "
        f"lost_impressions={lost_imps} acked_events={len(acked_events)} "
        f"rss_start_mb={rss_start:.1f} rss_end_mb={rss_end:.1f}"
    )
    last = (
        f"soak: requests={n} errors_5xx={errors_5xx} p99_ms={p99:.2f} lost_events={lost_events} "
        f"rss_growth_mb={rss_end - rss_start:.1f}"
    )
    if not args.faults:
        print(last)
        return 1 if errors_5xx or transport or lost_events or lost_imps else 0
    answers = sorted(a for r in results for a in r.answers)
    windows = []
    for name, killed in faults:
        back = min(
            (done for sent, done, status in answers if sent >= killed and status < 300), default=math.inf
        )
        windows.append((name, killed, back))
        print(f"soak: fault {name}: recovery_s={back - killed:.2f}")
    outside = sum(
        1
        for sent, done, status in answers
        if status >= 500 and not any(done >= k and sent <= b for _, k, b in windows)
    )
    recovery = max((b - k for _, k, b in windows), default=0.0)
    print(f"{last} faults={len(windows)} errors_5xx_outside_faults={outside} recovery_s_max={recovery:.2f}")
    return 1 if outside or transport or lost_events or lost_imps or len(windows) < 2 else 0


def register(tracking_uri: str, policy: Path) -> None:
    """Log the policy file as a new version of soak-policy in the MLflow server, alias champion."""
    import mlflow

    from recsys_rl.policy import load_policy
    from recsys_rl.tracking import log_policy

    mlflow.set_tracking_uri(tracking_uri)
    log_policy(load_policy(policy), "soak-policy", "champion")


if __name__ == "__main__":
    sys.exit(main())
