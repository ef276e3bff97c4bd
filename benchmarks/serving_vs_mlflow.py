"""One registered version served by MLflow's own server and by the banner service, same load, same run.

Registers a 1,000-product policy (32-dim, 128 hidden) as ``banner-policy`` version 1 in a temporary
SQLite registry, then serves it with ``mlflow models serve -w 1 --env-manager local`` (MLflow's
FastAPI/uvicorn scoring server over the pyfunc: one context per request, sampled, no logging) and
with ``recsys-rl serve --model-uri models:/banner-policy/1`` (one uvicorn worker; samples, signs and
durably logs every impression to SQLite, synchronous=FULL). Both get the same ``wrk`` load (2 threads,
8 connections, fixed duration), alternating for ``--rounds`` rounds; the median run of each is kept.

    python benchmarks/serving_vs_mlflow.py [--seconds 8] [--rounds 3] [--connections 8]

Last line: ``serving_vs_mlflow: rps=<n> p99_ms=<x> mlflow_rps=<n> mlflow_p99_ms=<x> ratio=<rps/mlflow_rps>``.
Goal: ratio >= 2 and p99 <= MLflow's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _net import free_port, wait_ready
from serving_latency import HISTORY_LEN, SERVE, banner_script, median_run, post_script, run_wrk, start, stop


def mlflow_script(path: Path, n_products: int, n_bodies: int = 256, seed: int = 0) -> Path:
    """The same varied contexts as ``banner_script``, as MLflow /invocations bodies (sampled banners)."""
    rng = random.Random(seed)
    bodies = []
    for _ in range(n_bodies):
        ids = rng.sample(range(n_products), 1 + rng.randint(0, HISTORY_LEN))
        body = {
            "dataframe_split": {"columns": ["viewed", "history"], "data": [[ids[0], ids[1:]]]},
            "params": {"mode": "explore"},
        }
        bodies.append(json.dumps(body, separators=(",", ":")))
    return post_script(path, "/invocations", bodies)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    with tempfile.TemporaryDirectory(prefix="vs-mlflow-") as tmp:
        work = Path(tmp)
        uri = f"sqlite:///{work}/mlflow.db"
        reg = subprocess.run(
            [
                sys.executable,
                "-c",
                f"""
import mlflow, torch
from recsys_rl import tracking
from recsys_rl.policy import BannerPolicy
torch.manual_seed(0)
mlflow.set_tracking_uri({uri!r})
with mlflow.start_run():
    tracking.log_policy(BannerPolicy(1000, 32, 128), "banner-policy", "champion")
""",
            ],
            capture_output=True,
            text=True,
            cwd=work,
        )
        if reg.returncode:
            sys.exit(f"registering the model failed: {reg.stderr[-2000:]}")
        env = {"MLFLOW_TRACKING_URI": uri}
        procs = []
        try:
            port = free_port()
            ours = f"http://127.0.0.1:{port}"
            procs.append(
                start(
                    SERVE,
                    "--model-uri",
                    "models:/banner-policy/1",
                    "--port",
                    str(port),
                    "--events",
                    f"sqlite:///{work}/events.db",
                    env=env,
                )
            )
            wait_ready(ours, procs[-1])
            mport = free_port()
            theirs = f"http://127.0.0.1:{mport}"
            mlflow_exe = str(Path(sys.executable).with_name("mlflow"))
            procs.append(
                subprocess.Popen(
                    [
                        mlflow_exe,
                        "models",
                        "serve",
                        "-m",
                        "models:/banner-policy/1",
                        "--env-manager",
                        "local",
                        "-w",
                        "1",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(mport),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    cwd=work,
                    env={
                        **os.environ,
                        "OMP_NUM_THREADS": "1",
                        **env,  # it execs `uvicorn` from PATH
                        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                    },
                )
            )
            wait_ready(theirs, procs[-1], path="/ping")
            targets = {
                "recsys_rl": (ours, banner_script(work / "ours.lua", 1000)),
                "mlflow": (theirs, mlflow_script(work / "mlflow.lua", 1000)),
            }
            for url, script in targets.values():
                run_wrk(url, script, 2, args.connections, args.threads)  # warm-up
            runs = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, (url, script) in targets.items():
                    runs[name].append(run_wrk(url, script, args.seconds, args.connections, args.threads))
        finally:
            for p in procs:
                stop(p)
    s = {name: median_run(r) for name, r in runs.items()}
    for name, r in s.items():
        print(
            f"{name}: rps={r['rps']:.0f} p50_ms={r['p50_us'] / 1000:.2f} p99_ms={r['p99_us'] / 1000:.2f} "
            f"requests={r['requests']} non2xx={r['non2xx']} socket_errors={r['socket_errors']}",
            flush=True,
        )
    print(f"machine: load average {os.getloadavg()[0]:.2f} at end", flush=True)
    o, m = s["recsys_rl"], s["mlflow"]
    print(
        f"serving_vs_mlflow: rps={o['rps']:.0f} p99_ms={o['p99_us'] / 1000:.2f} mlflow_rps={m['rps']:.0f} "
        f"mlflow_p99_ms={m['p99_us'] / 1000:.2f} ratio={o['rps'] / m['rps']:.2f}"
    )


if __name__ == "__main__":
    main()
