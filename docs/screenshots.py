"""Screenshots of the MLflow UI as `recsys-rl ui` opens it, made from a real sweep, never by hand.

    python docs/screenshots.py            # -> docs/img/sweep-runs.png, docs/img/sweep-runs-charts.png

Runs a small reward-scheme sweep into a temporary SQLite store, starts `recsys-rl ui` on a free port,
and photographs the two URLs it prints (runs table, charts) with headless Chromium
(`apt-get install chromium`). Takes about a minute on two cores.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CLI = [sys.executable, "-m", "recsys_rl"]
SIZES = {
    "train.total_impressions": 16384,
    "baseline.logged_impressions": 5000,
    "baseline.epochs": 1,
    "train.eval_users": 1024,
    "tracking.log_model": "false",
}
SHOTS = {"table": ("sweep-runs.png", "1920,1000"), "charts": ("sweep-runs-charts.png", "1920,1300")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep(workdir: Path, uri: str) -> None:
    sets = [a for k, v in SIZES.items() for a in ("--set", f"{k}={v}")]
    subprocess.run(
        [*CLI, "sweep", "--rewards", "ctr,purchase,graded,revenue", "--quiet", "--workdir", str(workdir)]
        + sets,
        cwd=workdir,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        check=True,
        stdout=subprocess.DEVNULL,
    )


def printed_urls(log: Path, ui: subprocess.Popen, port: int, timeout_s: float = 120) -> dict[str, str]:
    """{"table": url, "charts": url} once `recsys-rl ui` printed them and its server answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ui.poll() is not None:
            raise SystemExit(f"recsys-rl ui exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return dict(re.findall(r"compare runs \((table|charts)\):\s+(\S+)", log.read_text()))
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"recsys-rl ui not ready after {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def screenshot(chromium: str, url: str, out: Path, size: str, profile: Path) -> None:
    subprocess.run(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"]
        + [f"--window-size={size}", "--virtual-time-budget=60000", "--hide-scrollbars"]
        + ["--run-all-compositor-stages-before-draw", f"--screenshot={out}", url],
        check=True,
        capture_output=True,
        timeout=300,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "img")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("error: chromium: not found (apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recsys-rl-shots-") as d:
        tmp = Path(d)
        uri = f"sqlite:///{tmp}/mlflow.db"
        sweep(tmp, uri)
        port, log = free_port(), tmp / "ui.log"
        with open(log, "wb") as out:
            ui = subprocess.Popen(
                [*CLI, "ui", "--tracking-uri", uri, "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp,
                start_new_session=True,  # `recsys-rl ui` and its `mlflow ui` stop together
            )
        try:
            urls = printed_urls(log, ui, port)
            for view, (name, size) in SHOTS.items():
                screenshot(chromium, urls[view], args.out / name, size, tmp / f"profile-{view}")
                print(args.out / name)
        finally:
            os.killpg(ui.pid, signal.SIGTERM)
            ui.wait(30)


if __name__ == "__main__":
    main()
