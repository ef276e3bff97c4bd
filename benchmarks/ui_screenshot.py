"""Screenshot a sweep's experiment page in the MLflow UI with headless Chromium, as a person sees it.

Starts ``mlflow server`` (one worker) on the given store, opens the experiment's runs in Debian's
``chromium`` (``apt-get install -y chromium``) and writes two PNGs: the runs table (``--out``) and the
chart view (``<out>-charts.png``), both in the "Model training" workflow (``workflowType`` in the URL:
the sidebar toggle otherwise remembers GenAI per browser).

The server listens on 127.0.0.2 (loopback, but not "localhost" to the UI): a team's server is seen from
another host, and the UI auto-opens its assistant panel over the runs only for a local server.

    python benchmarks/ui_screenshot.py --tracking-uri sqlite:///mlflow.db [--experiment recsys-rl-sweep] [--out sweep.png]

Last line: ``ui_screenshot: <png path> <charts png path> experiment=<id> runs=<n>``.
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

HOST = "127.0.0.2"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=2000,1100",
    "--virtual-time-budget=20000",
]


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
    base = f"http://{HOST}:{port}"
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            args.tracking_uri,
            "--host",
            HOST,
            "--allowed-hosts",
            f"{HOST}:{port},{HOST}",
            "--cors-allowed-origins",
            base,
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    try:
        wait_ready(base, server, path="/health")
        api = f"{base}/api/2.0/mlflow"
        r = httpx.get(f"{api}/experiments/get-by-name", params={"experiment_name": args.experiment})
        if r.status_code == 404:
            sys.exit(f"--experiment: no experiment named {args.experiment!r} in {args.tracking_uri}")
        r.raise_for_status()
        exp_id = r.json()["experiment"]["experiment_id"]
        runs = httpx.post(f"{api}/runs/search", json={"experiment_ids": [exp_id]}).json().get("runs", [])
        out = args.out.resolve()
        charts = out.with_name(f"{out.stem}-charts{out.suffix}")
        page = f"{base}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
        for png, url in ((out, page), (charts, f"{page}&compareRunsMode=CHART")):
            with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
                subprocess.run(
                    [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}", url],
                    check=True,
                    capture_output=True,
                    timeout=180,
                )
    finally:
        server.terminate()
        server.wait(30)
    print(f"ui_screenshot: {out} {charts} experiment={exp_id} runs={len(runs)}")


if __name__ == "__main__":
    main()
