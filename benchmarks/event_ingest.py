"""Durable feedback ingest rate of both event stores under concurrent writers.

Each writer thread plays a server worker handling POST /feedback: one event per call, and the call
returns only once the event is durable (SQLite committed with synchronous=FULL, Redis executed), so
the rate is what the server can acknowledge. Group commit is what makes it scale with threads.

    python benchmarks/event_ingest.py [--threads 16] [--seconds 3] [--redis redis://127.0.0.1:6379/0]

Last line: ``events: sqlite_per_s=<n> redis_per_s=<n>`` (redis_per_s=nan if Redis is unreachable).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis

from recsys_rl.events import EventStore, Feedback, Impression, open_store


def ingest_rate(store: EventStore, threads: int, seconds: float) -> tuple[float, int]:
    """Feedback events acknowledged per second by ``threads`` writers, one event per call; also the
    number of write transactions (group commits) it took."""
    banners = [
        Impression(f"i{t}", 0.0, t, 1, (2, 3), (10, 11, 12, 13, 14), 1e-3, math.log(1e-3), "bench")
        for t in range(threads)
    ]
    store.append_impressions(banners)
    batches_before = store._writer.batches
    counts = [0] * threads
    start_line = threading.Barrier(threads + 1)
    stop = threading.Event()

    def write(t: int) -> None:
        banner, n = banners[t], 0
        start_line.wait()
        while not stop.is_set():
            event = Feedback(f"e{t}-{n}", banner.impression_id, 1.0, "purchase", 12, 2, 1, 9.99)
            store.append_feedback([event])
            n += 1
        counts[t] = n

    workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    start_line.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    if store.count_feedback() != sum(counts):
        raise RuntimeError(f"acknowledged {sum(counts)} events but the store holds {store.count_feedback()}")
    return sum(counts) / elapsed, store._writer.batches - batches_before


def _delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--threads",
        type=int,
        default=32,
        help="concurrent writers (FastAPI runs up to 40 sync calls at once)",
    )
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--synchronous", default="full", choices=["full", "normal"])
    ap.add_argument("--dir", default=None, help="directory for the SQLite file (default: a temp dir)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        uri = f"sqlite:///{Path(tmp).resolve()}/events.db?synchronous={args.synchronous}"
        with open_store(uri) as store:
            sqlite_rate, batches = ingest_rate(store, args.threads, args.seconds)
    print(
        f"sqlite synchronous={args.synchronous} threads={args.threads}: {sqlite_rate:,.0f} events/s, "
        f"{batches} commits"
    )

    redis_rate = float("nan")
    try:
        store = open_store(f"{args.redis}?prefix=bench-{uuid.uuid4().hex[:8]}&durability=best-effort")
    except ConnectionError as exc:
        print(f"redis: skipped ({exc})")
    else:
        try:
            redis_rate, batches = ingest_rate(store, args.threads, args.seconds)
        finally:
            store.close()
            _delete_prefix(args.redis, store.prefix)
        print(f"redis threads={args.threads}: {redis_rate:,.0f} events/s, {batches} pipelines")
    print(f"events: sqlite_per_s={sqlite_rate:.0f} redis_per_s={redis_rate:.0f}")


if __name__ == "__main__":
    main()
