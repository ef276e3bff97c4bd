"""`recsys-rl ui`: the MLflow UI on the local tracking store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import typer
from rich.console import Console

console = Console()


def ui_cmd(
    port: int = typer.Option(5000, "--port"),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="default: $MLFLOW_TRACKING_URI or sqlite"),
) -> None:
    """Open the MLflow UI on the local store."""
    from recsys_rl.config import TrackingConfig
    from recsys_rl.tracking import tracking_uri as default_uri

    uri = tracking_uri or default_uri(TrackingConfig())
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    cmd = [exe, "ui", "--backend-store-uri", uri, "--port", str(port), "--workers", "1"]
    console.print(" ".join(cmd))
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    raise typer.Exit(subprocess.call(cmd, env=env))
