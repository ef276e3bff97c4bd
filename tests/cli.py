"""Run the CLI as a user does: a subprocess of this interpreter, real files, real stores."""

from __future__ import annotations

import subprocess
import sys

CLI = [sys.executable, "-m", "recsys_rl"]


def run_cli(args: list[str], cwd, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
