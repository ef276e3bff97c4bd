"""Screenshot a sweep's experiment page in the MLflow UI with headless Chromium, as a person sees it.

Starts ``mlflow server`` (one worker) on the given store, opens the experiment's runs view in Debian's
``chromium`` (``apt-get install -y chromium``) and writes a PNG.

    python benchmarks/ui_screenshot.py --tracking-uri sqlite:///mlflow.db [--experiment recsys-rl-sweep] [--out sweep.png]

Last line: ``ui_screenshot: <png path> experiment=<id> runs=<n>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from _net import free_port, wait_ready

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--window-size=1600,1000", "--virtual-time-budget=20000"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    ap.add_argument("--experiment", default="recsys-rl-sweep")
    ap.add_argument("--out", type=Path, default=Path("sweep.png"))
    args = ap.parse_args()
    browser = shutil.which("chromium")
    if browser is None:
        sys.exit("chromium not found: apt-get install -y chromium")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", args.tracking_uri,
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip
    try:
        wait_ready(base, server, path="/health")
        api = f"{base}/api/2.0/mlflow"
        r = httpx.get(f"{api}/experiments/get-by-name", params={"experiment_name": args.experiment})
        if r.status_code != 200:
            sys.exit(f"--experiment: no experiment named {args.experiment!r} in {args.tracking_uri}")
        exp_id = r.json()["experiment"]["experiment_id"]
        runs = httpx.post(f"{api}/runs/search", json={"experiment_ids": [exp_id]}).json().get("runs", [])
        with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
            out = args.out.resolve()
            subprocess.run(
                [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}",
                 f"{base}/#/experiments/{exp_id}/runs"],
                check=True, capture_output=True, timeout=180,
            )  # fmt: skip
    finally:
        server.terminate()
        server.wait(30)
    print(f"ui_screenshot: {out} experiment={exp_id} runs={len(runs)}")


if __name__ == "__main__":
    main()
