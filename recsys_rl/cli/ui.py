"""`recsys-rl ui`: the MLflow UI on the local tracking store, opened on the latest comparison."""

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
    experiment: str = typer.Option(
        None, "--experiment", help="experiment to open; default: the one with the newest run"
    ),
) -> None:
    """Open the MLflow UI on the local store, at the newest sweep's runs side by side."""
    from recsys_rl.config import TrackingConfig
    from recsys_rl.tracking import tracking_uri as default_uri
    from recsys_rl.tracking_ui import publish

    uri = tracking_uri or default_uri(TrackingConfig())
    base = f"http://127.0.0.1:{port}"
    page = publish(uri, base, experiment)
    if page is None and experiment:
        typer.echo(f"error: --experiment: no experiment named {experiment!r} in {uri}", err=True)
        raise typer.Exit(2)
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    cmd = [exe, "ui", "--backend-store-uri", uri, "--port", str(port), "--workers", "1"]
    console.print(" ".join(cmd))
    if page is None:
        typer.echo(f"no runs yet; the MLflow UI: {base}")
    else:  # whole lines (no console wrapping), so the URLs stay clickable
        typer.echo(f"compare runs (table):  {page.table_url}")
        typer.echo(f"compare runs (charts): {page.charts_url}")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    raise typer.Exit(subprocess.call(cmd, env=env))
