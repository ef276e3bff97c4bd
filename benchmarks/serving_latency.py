"""Latency and throughput of the banner service, against a bare FastAPI app on the same stack.

Starts, one at a time on loopback, each as its own process with one uvicorn worker and 1 torch thread:

1. the service (``recsys-rl serve``) with a 1,000-product BannerPolicy and a SQLite event store in
   a temporary directory, with the store's default durability (synchronous=FULL: an answered banner
   is on disk, fsync'ed) and again with synchronous=NORMAL (survives a crash of the server process,
   not of the machine: no fsync per commit);
2. a bare FastAPI app that reads the body and returns a constant of the same size as a banner
   response (the ceiling the framework itself allows on this machine);
3. "route_only": the service with scoring and impression logging replaced by a constant impression
   (HTTP route, validation, catalogue check, metrics and response only). Not a mode of the product:
   its ratio bounds what any scoring and logging could reach in one process on this machine
   (``--decompose`` adds two more such stages, see STAGED);
4. the service at 100,000 products;

and loads each with ``wrk`` (2 threads, 8 connections, fixed duration; a Lua script posts varied
banner requests and reports exact percentiles, the request count and non-2xx answers). The load is
bounded by duration at fixed concurrency, not by a request count: ``wrk`` has no count option, and a
Lua ``wrk.thread:stop()`` after N answers still holds the run (and its rate's denominator) to the
full ``-d`` (measured: 2,000 answers reported over 10.00 s). Service and echo runs alternate
for ``--rounds`` rounds and the median run of each is kept, so a busy neighbour on a shared machine
skews both alike. Then posts feedback in batches of 100 fresh events to measure durable ingestion,
checking afterwards that the store holds what was acknowledged.

    python benchmarks/serving_latency.py [--seconds 8] [--rounds 3] [--connections 8] [--threads 2]

``wrk`` is a Debian package (``apt-get install -y wrk``). Last line:
``serving: p50_ms=<x> p99_ms=<x> rps=<x> echo_rps=<x> ratio=<rps/echo_rps>`` (the 1,000-product
service, default durability). Goals: p99 <= 10 ms at 8 connections, feedback >= 5,000 events/s; the ratio
to the bare echo is a yardstick of framework overhead, not a goal.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from _net import free_port, wait_ready

ROOT = Path(__file__).resolve().parent.parent
HISTORY_LEN = 10

SERVE = """
import sys, typer
from recsys_rl.cli.serve import serve
sys.argv = ["serve"] + sys.argv[1:]
typer.run(serve)
"""

# The same service with parts of the banner path replaced, to show what each part costs. Not modes of
# the product: they bound the ratio any implementation of the replaced parts could reach here.
#   route_only: the handler gets one constant impression (no batcher thread, no scoring, no store):
#               HTTP route, validation, catalogue check, metrics and response only;
#   no_scoring: (--decompose) the batcher thread builds signed impressions of a constant banner and
#               logs them durably through the real store (everything but the model);
#   no_scoring_no_store: (--decompose) as no_scoring, with the store's append answered at once.
STAGED = """
import sys, time, typer
from concurrent.futures import Future
import serving.banner_batcher as bb
from recsys_rl.cli.serve import serve
from recsys_rl.events import Impression, SqliteEventStore

stage = sys.argv.pop(1)
LOGP = -0.6931471805599453
if stage == "route_only":
    CONSTANT = Impression("0" * 32 + "." + "0" * 32, time.time(), 0, 0, (1,), (1, 2, 3, 4, 5), 0.5, LOGP, "v")

    async def constant(self, *args):
        return CONSTANT

    bb.BannerBatcher.serve = constant
else:
    def constant_banners(self, jobs, model):
        now, ids = time.time(), self.ids.new_many(len(jobs))
        return [Impression(i, now, j.user_id, j.viewed, j.history, (1, 2, 3, 4, 5), 0.5, LOGP, model.version)
                for j, i in zip(jobs, ids)]

    bb.BannerBatcher._score = constant_banners
if stage == "no_scoring_no_store":
    def stored_at_once(self, items):
        f = Future()
        f.set_result(len(items))
        return f

    SqliteEventStore.append_impressions_nowait = stored_at_once
sys.argv = ["serve"] + sys.argv[1:]
typer.run(serve)
"""

ECHO = """
import sys, uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response
body = b"x" * int(sys.argv[2])
app = FastAPI()

@app.post("/v1/banners")
async def banners(request: Request) -> Response:
    await request.body()
    return Response(body, media_type="application/json")

@app.get("/readyz")
async def readyz() -> Response:
    return Response(b'{"status":"ready"}', media_type="application/json")

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), workers=1, access_log=False, log_level="warning")
"""

REPORT = """
done = function(summary, latency, requests)
  io.write(string.format("WRK requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d socket_errors=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout))
end
"""


def start(code: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def post_script(path: Path, route: str, bodies: list[str]) -> Path:
    """A wrk script POSTing the given JSON bodies to ``route`` in turn, with the REPORT line at the end.
    Bodies sit in level-1 long brackets: JSON may hold "]]" (a list inside a list)."""
    lua = "local bodies = {\n" + ",\n".join(f"  [=[{b}]=]" for b in bodies) + "\n}\n"
    lua += (
        f"""
local i = 0
local headers = {{["Content-Type"] = "application/json"}}
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "{route}", headers, bodies[i])
end
"""
        + REPORT
    )
    path.write_text(lua)
    return path


def banner_script(path: Path, n_products: int, n_bodies: int = 256, seed: int = 0) -> Path:
    """A wrk script cycling through varied banner requests (distinct histories of 0..10 products)."""
    rng = random.Random(seed)
    bodies = []
    for i in range(n_bodies):
        ids = rng.sample(range(n_products), 1 + rng.randint(0, HISTORY_LEN))
        body = {"user_id": i, "viewed": ids[0], "history": ids[1:]}
        bodies.append(json.dumps(body, separators=(",", ":")))
    return post_script(path, "/v1/banners", bodies)


def feedback_script(path: Path, banners: list[dict], per_request: int) -> Path:
    """A wrk script posting ``per_request`` fresh events (unique ids per thread and request) per call,
    spread over the given impressions, alternating clicks and purchases."""
    templates = []
    for b in banners:
        iid, items = b["impression_id"], b["items"]
        templates.append(f'","impression_id":"{iid}","type":"click","product_id":{items[0]}}}')
        templates.append(
            f'","impression_id":"{iid}","type":"purchase","product_id":{items[1]},"units":2,"price":9.5}}'
        )
    lua = "local templates = {\n" + ",\n".join(f"  [[{t}]]" for t in templates) + "\n}\n"
    lua += (
        f"""
local per_request = {per_request}
local counter = 0
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local headers = {{["Content-Type"] = "application/json"}}
request = function()
  local parts = {{}}
  for k = 1, per_request do
    counter = counter + 1
    local t = templates[(counter % #templates) + 1]
    parts[k] = '{{"event_id":"w' .. tid .. '-' .. counter .. t
  end
  return wrk.format("POST", "/v1/feedback", headers, '{{"events":[' .. table.concat(parts, ",") .. ']}}')
end
"""
        + REPORT
    )
    path.write_text(lua)
    return path


def run_wrk(url: str, script: Path, seconds: float, connections: int, threads: int) -> dict:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"WRK (.*)", out)
    if m is None:
        raise RuntimeError(f"no report from wrk:\n{out}")
    stats = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    return stats


def start_service(
    n_products: int, work: Path, synchronous: str, stage: str | None = None
) -> tuple[subprocess.Popen, str, Path]:
    """The service on an n_products BannerPolicy (32-dim embeddings, 128 hidden) with its own SQLite
    store (``stage``: one of the STAGED variants instead); returns the process, its URL and its store."""
    import torch

    from recsys_rl.policy import BannerPolicy, save_policy

    policy_path = work / f"policy-{n_products}.pt"
    if not policy_path.exists():
        torch.manual_seed(0)
        save_policy(BannerPolicy(n_products, 32, 128), policy_path)
    db = work / f"events-{n_products}-{synchronous}-{stage or 'service'}.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    events = f"sqlite:///{db}?synchronous={synchronous}"
    code, stage_args = (SERVE, ()) if stage is None else (STAGED, (stage,))
    proc = start(
        code, *stage_args, "--policy-path", str(policy_path), "--events", events, "--port", str(port)
    )
    wait_ready(url, proc)
    return proc, url, db


def line(name: str, s: dict) -> str:
    return (
        f"{name}: p50_ms={s['p50_us'] / 1000:.2f} p99_ms={s['p99_us'] / 1000:.2f} rps={s['rps']:.0f} "
        f"requests={s['requests']} non2xx={s['non2xx']} socket_errors={s['socket_errors']}"
    )


def median_run(runs: list[dict]) -> dict:
    """The run with the median throughput (its latencies come with it); errors summed over runs."""
    runs = sorted(runs, key=lambda r: r["rps"])
    out = dict(runs[len(runs) // 2])
    out["non2xx"] = sum(r["non2xx"] for r in runs)
    out["socket_errors"] = sum(r["socket_errors"] for r in runs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each wrk run")
    ap.add_argument(
        "--rounds", type=int, default=3, help="alternating runs of service and echo (median kept)"
    )
    ap.add_argument("--connections", type=int, default=8, help="concurrent connections")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--feedback-batch", type=int, default=100, help="events per feedback request")
    ap.add_argument("--skip-large", action="store_true", help="skip the 100,000-product catalogue")
    ap.add_argument(
        "--decompose",
        action="store_true",
        help="also run the service without scoring, and without scoring or store (what each part costs)",
    )
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f} at start", flush=True)

    def load(url: str, script: Path) -> dict:
        return run_wrk(url, script, args.seconds, args.connections, args.threads)

    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        work = Path(tmp)
        procs = []
        try:
            full, full_url, full_db = start_service(1000, work, "full")
            procs.append(full)
            normal, normal_url, _ = start_service(1000, work, "normal")
            procs.append(normal)
            stages = ["route_only"] + (["no_scoring_no_store", "no_scoring"] if args.decompose else [])
            staged = {}
            for stage in stages:
                proc, staged[stage], _ = start_service(1000, work, "full", stage)
                procs.append(proc)
            with httpx.Client(base_url=full_url) as client:
                sample = client.post("/v1/banners", json={"user_id": 0, "viewed": 1, "history": [2]}).json()
            echo_port = free_port()
            echo_url = f"http://127.0.0.1:{echo_port}"
            size = len(json.dumps(sample, separators=(",", ":")))
            procs.append(start(ECHO, str(echo_port), str(size)))
            wait_ready(echo_url, procs[-1])

            script = banner_script(work / "banners-1k.lua", 1000)
            targets = {
                "banners_1k": full_url,
                "banners_1k_sync_normal": normal_url,
                **staged,
                "echo": echo_url,
            }
            for url in targets.values():  # warm-up: allocators, caches, the WAL file
                run_wrk(url, script, 2, args.connections, args.threads)
            runs: dict[str, list[dict]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, url in targets.items():
                    runs[name].append(load(url, script))
            stats = {name: median_run(r) for name, r in runs.items()}
            for name in ("banners_1k", "banners_1k_sync_normal", *stages):
                print(
                    line(name, stats[name]) + f" ratio={stats[name]['rps'] / stats['echo']['rps']:.3f}",
                    flush=True,
                )
            print(line("echo", stats["echo"]), flush=True)

            with httpx.Client(base_url=full_url) as client:
                banners = [
                    client.post("/v1/banners", json={"user_id": i, "viewed": i, "history": [i + 1]}).json()
                    for i in range(200)
                ]
            fb = load(full_url, feedback_script(work / "feedback.lua", banners, args.feedback_batch))
        finally:
            for p in procs:
                stop(p)
        from recsys_rl.events import SqliteEventStore

        with SqliteEventStore(full_db) as store:
            stored = store.count_feedback()
        acknowledged = (fb["requests"] - fb["non2xx"]) * args.feedback_batch
        if stored < acknowledged:
            raise RuntimeError(f"acknowledged {acknowledged} feedback events but the store holds {stored}")
        print(
            f"feedback: events_per_s={acknowledged / (fb['duration_us'] / 1e6):.0f} batch={args.feedback_batch} "
            f"p50_ms={fb['p50_us'] / 1000:.2f} p99_ms={fb['p99_us'] / 1000:.2f} non2xx={fb['non2xx']} "
            f"acknowledged={acknowledged} stored={stored} (synchronous=full)",
            flush=True,
        )

        if not args.skip_large:
            large, large_url, _ = start_service(100_000, work, "full")
            try:
                run_wrk(large_url, script, 2, args.connections, args.threads)
                print(line("banners_100k", load(large_url, script)), flush=True)
            finally:
                stop(large)

    small, echo = stats["banners_1k"], stats["echo"]
    if small["non2xx"] or small["socket_errors"]:
        print(
            f"warning: {small['non2xx']} non-2xx answers, {small['socket_errors']} socket errors", flush=True
        )
    print(f"machine: load average {os.getloadavg()[0]:.2f} at end", flush=True)
    print(
        f"serving: p50_ms={small['p50_us'] / 1000:.2f} p99_ms={small['p99_us'] / 1000:.2f} rps={small['rps']:.0f} "
        f"echo_rps={echo['rps']:.0f} ratio={small['rps'] / echo['rps']:.3f}"
    )


if __name__ == "__main__":
    main()
