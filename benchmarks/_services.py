"""Services of our own to break on purpose: a redis-server and an MLflow server on free loopback ports.

Each is a real process that can be SIGKILLed and restarted on the same port and data directory, the
way a crashed service comes back. Used by ``soak.py --faults`` and by the fault tests (imported there
as ``benchmarks._services``), so both break the services the same way.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Process(abc.ABC):
    """A server process in its own process group (so a kill takes its workers too), with a log file."""

    name = "service"

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self.log_path = self.dir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """The server's command line."""

    def _env(self) -> dict:
        return dict(os.environ)

    @abc.abstractmethod
    def _answers(self) -> bool:
        """True once the server answers its own health check."""

    def start(self, timeout_s: float = 60.0) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self._command(), stdout=log, stderr=log, env=self._env(), start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not answering after {timeout_s:.0f} s: {self.tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown hook runs, nothing is flushed."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self, timeout_s: float = 60.0) -> None:
        self.kill()
        self.start(timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer(_Process):
    """redis-server keeping everything on disk: AOF on, fsynced before every reply (``appendfsync
    always``), no RDB snapshots; a restart on the same ``data_dir`` loads the AOF back."""

    name = "redis"

    def __init__(self, data_dir: Path, port: int | None = None, appendfsync: str = "always") -> None:
        super().__init__(data_dir, port)
        self.appendfsync = appendfsync
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        return [
            exe,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
        ]

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")  # -LOADING while the AOF is read back
        except OSError:
            return False


class MlflowServer(_Process):
    """``mlflow server`` on a SQLite backend and a local artifact store in ``data_dir``, one worker."""

    name = "mlflow"

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self.url = f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
        return [
            exe,
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.dir}/mlflow.db",
            "--artifacts-destination",
            str(self.dir / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]

    def _env(self) -> dict:
        return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False
