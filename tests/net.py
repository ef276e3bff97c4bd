"""Loopback helpers shared by the tests that start real server processes."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

import httpx


def free_port() -> int:
    """A port nothing listens on right now (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Callable[[], str], timeout_s: float = 60.0) -> None:
    """Poll ``url`` until it answers 200; fail with the process log if it dies or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, f"server exited:\n{log()[-3000:]}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"{url} not ready after {timeout_s:.0f} s:\n{log()[-3000:]}"
        time.sleep(0.1)
