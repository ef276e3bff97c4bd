"""Loopback helpers the serving benchmarks share (scripts run as ``python benchmarks/<name>.py``, so
this module is importable as ``_net``; tests have their own in ``tests/net.py``)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(
    url: str, proc: subprocess.Popen, timeout: float = 120.0, path: str = "/readyz"
) -> httpx.Response:
    """Poll ``url`` + ``path`` until it answers 200 (returns that response); fail if ``proc`` exits or
    time runs out. ``/readyz`` for ours, ``/ping`` for ``mlflow models serve``, ``/health`` for ``mlflow server``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready: {err}")
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(f"{url}{path}", timeout=1.0)
            if r.status_code == 200:
                return r
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s")
