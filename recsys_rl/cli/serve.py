"""`recsys-rl serve` (the banner service) and `recsys-rl drive` (simulated users driving it over HTTP).

``serving`` and ``simulator`` are imported inside the commands, so ``import recsys_rl`` pulls in
neither. The driver closes the loop end to end: users from the simulator ask the server for banners,
respond to them as the simulator says, and post their clicks and purchases back.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from recsys_rl.config import ConfigError, SimConfig, load, load_reward
from recsys_rl.records import PAD


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def serve(
    config: Annotated[
        Path | None, typer.Option("--config", help="serving YAML (fields of serving.config.ServeConfig)")
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="address to listen on (default 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="port (default 8000)")] = None,
    model_uri: Annotated[
        str | None, typer.Option("--model-uri", help="e.g. models:/banner-policy@champion (followed)")
    ] = None,
    policy_path: Annotated[Path | None, typer.Option("--policy-path", help="a save_policy file")] = None,
    events: Annotated[
        str | None, typer.Option("--events", help="event store URI (default sqlite:///events.db)")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", help="exploration temperature")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", help="server processes on the port, sharing store, alias and secret (default 1)"
        ),
    ] = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="log every request")] = False,
) -> None:
    """Serve banners over HTTP (uvicorn; one or more worker processes) with feedback, health, metrics
    and hot reload."""
    import uvicorn

    from serving.config import load_config

    overrides = dict(
        host=host,
        port=port,
        model_uri=model_uri,
        policy_path=policy_path,
        events=events,
        temperature=temperature,
        workers=workers,
    )
    try:
        cfg = load_config(config, overrides)
    except ConfigError as e:
        raise _fail(str(e)) from None
    if not cfg.has_model_source:
        raise _fail("no model to serve: give --model-uri, --policy-path or a config with one")
    if cfg.policy_path is not None and not Path(cfg.policy_path).is_file():
        raise _fail(f"policy_path: {cfg.policy_path}: file not found")
    if cfg.workers > 1:
        _serve_workers(cfg, access_log)
        return
    from serving.app import create_app

    try:
        app = create_app(cfg)
    except ValueError as e:
        raise _fail(str(e)) from None
    gc.freeze()  # startup objects (torch, mlflow, the app) leave the collector: no 50 ms full collections
    uvicorn.run(app, host=cfg.host, port=cfg.port, workers=1, access_log=access_log, log_level="info")


def _serve_workers(cfg, access_log: bool) -> None:
    """``cfg.workers`` uvicorn worker processes (restarted by uvicorn's supervisor if one dies), each
    building the app from ``cfg`` (``serving.worker``), with prometheus-client's multiprocess mode on:
    a fresh ``PROMETHEUS_MULTIPROC_DIR`` for this run (or the caller's, emptied), removed at exit."""
    import os
    import shutil
    import tempfile

    import uvicorn

    from serving.metrics import MULTIPROC_ENV
    from serving.worker import CONFIG_ENV

    given = os.environ.get(MULTIPROC_ENV)
    metrics_dir = Path(given) if given else Path(tempfile.mkdtemp(prefix="recsys-rl-metrics-"))
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):  # values of a previous run must not add up with this one's
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(metrics_dir)
    os.environ[CONFIG_ENV] = cfg.model_dump_json()
    try:
        uvicorn.run(
            "serving.worker:app",
            factory=True,
            host=cfg.host,
            port=cfg.port,
            workers=cfg.workers,
            access_log=access_log,
            log_level="info",
        )
    finally:
        if not given:
            shutil.rmtree(metrics_dir, ignore_errors=True)


@dataclass
class DriveSummary:
    """What a drive did; ``reward`` is the mean per impression under the chosen scheme."""

    requests: int = 0
    errors: int = 0
    impressions: int = 0
    events_posted: int = 0
    events_accepted: int = 0
    duplicates: int = 0
    clicks: float = 0.0
    units: float = 0.0
    reward_sum: float = 0.0
    seconds: float = 0.0
    error_samples: list[str] = field(default_factory=list)

    @property
    def reward(self) -> float:
        return self.reward_sum / self.impressions if self.impressions else math.nan

    def line(self, scheme: str) -> str:
        rate = self.requests / self.seconds if self.seconds else math.nan
        return (
            f"drive: requests={self.requests} errors={self.errors} impressions={self.impressions} "
            f"events_posted={self.events_posted} events_accepted={self.events_accepted} "
            f"duplicates={self.duplicates} clicks_per_impression={self.clicks / max(self.impressions, 1):.4f} "
            f"mean_reward_{scheme}={self.reward:.4f} req_per_s={rate:.0f}"
        )


async def _drive(url: str, sim, users: int, seed: int, feedback: bool, concurrency: int, scheme, chunk: int):
    """Drive ``users`` simulated users through the server, ``chunk`` at a time."""
    import httpx
    import torch

    from recsys_rl.rewards import reward

    g = torch.Generator().manual_seed(seed)
    out = DriveSummary()
    gate = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:
        ready = await client.get("/readyz")
        if ready.status_code != 200:
            raise RuntimeError(f"{url}/readyz: server not ready ({ready.status_code}: {ready.text})")
        n_server = ready.json()["n_products"]
        if n_server != sim.n_products:
            raise ValueError(
                f"--sim-config: the simulator has {sim.n_products} products but the served model has "
                f"{n_server}; use the simulator config the model was trained on"
            )

        async def post(path: str, body: dict) -> dict | None:
            async with gate:
                out.requests += 1
                try:
                    r = await client.post(path, json=body)
                except httpx.HTTPError as exc:
                    r, why = None, f"{path}: {type(exc).__name__}: {exc}"
            if r is not None and r.status_code == 200:
                return r.json()
            if r is not None:
                why = f"{path}: {r.status_code} {r.text[:200]}"
            out.errors += 1
            if len(out.error_samples) < 5:
                out.error_samples.append(why)
            return None

        for start in range(0, users, chunk):
            n = min(chunk, users - start)
            uid = sim.sample_users(n, g)
            ctx = sim.contexts(uid, g)
            hist = ctx.history.tolist()
            bodies = [
                {"user_id": u, "viewed": v, "history": [x for x in h if x != PAD]}
                for u, v, h in zip(uid.tolist(), ctx.viewed.tolist(), hist, strict=True)
            ]
            answers = await asyncio.gather(*(post("/v1/banners", b) for b in bodies))
            served = [i for i, a in enumerate(answers) if a is not None]
            if not served:
                continue
            banners = torch.tensor([answers[i]["items"] for i in served], dtype=torch.long)  # (S, K)
            outcome = sim.respond(uid[served], banners, g)
            out.impressions += len(served)
            out.clicks += float(outcome.clicks.sum())
            out.units += float(outcome.units.sum())
            out.reward_sum += float(reward(scheme, outcome).sum())
            if feedback:
                events = _feedback_events([answers[i] for i in served], banners, outcome)
                out.events_posted += len(events)
                for b in range(0, len(events), 500):
                    ack = await post("/v1/feedback", {"events": events[b : b + 500]})
                    if ack is not None:
                        out.events_accepted += ack["accepted"]
                        out.duplicates += ack["duplicates"]
    out.seconds = time.perf_counter() - t0
    return out


def _feedback_events(answers: list[dict], banners, outcome) -> list[dict]:
    """A click event per clicked slot and a purchase event per bought slot (price = revenue / units)."""
    clicks, units, revenue = outcome.clicks.tolist(), outcome.units.tolist(), outcome.revenue.tolist()
    events = []
    for a, items, c, u, r in zip(answers, banners.tolist(), clicks, units, revenue, strict=True):
        for k in range(len(items)):
            if c[k] > 0 or u[k] > 0:
                events.append(
                    {
                        "event_id": uuid.uuid4().hex,
                        "impression_id": a["impression_id"],
                        "type": "click",
                        "product_id": items[k],
                    }
                )
            if u[k] > 0:
                events.append(
                    {
                        "event_id": uuid.uuid4().hex,
                        "impression_id": a["impression_id"],
                        "type": "purchase",
                        "product_id": items[k],
                        "units": int(u[k]),
                        "price": r[k] / u[k],
                    }
                )
    return events


def drive(
    url: Annotated[str, typer.Option("--url", help="base URL of a running server")] = "http://127.0.0.1:8000",
    users: Annotated[int, typer.Option("--users", min=1, help="simulated banner requests")] = 1000,
    sim_config: Annotated[
        Path | None,
        typer.Option("--sim-config", help="simulator YAML of the served model's world (its catalogue size)"),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of users, contexts and responses")] = 0,
    feedback: Annotated[
        bool, typer.Option("--feedback/--no-feedback", help="post clicks and purchases")
    ] = True,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="requests in flight")] = 8,
    reward_scheme: Annotated[
        str, typer.Option("--reward", help="scheme of the mean reward printed")
    ] = "graded",
) -> None:
    """Simulated users request banners from a running server and post their feedback back."""
    from simulator import Simulator

    try:
        sim_cfg = load(SimConfig, sim_config) if sim_config is not None else SimConfig()
        scheme = load_reward(reward_scheme)
    except ConfigError as e:
        raise _fail(str(e)) from None
    sim = Simulator(sim_cfg)
    try:
        summary = asyncio.run(_drive(url, sim, users, seed, feedback, concurrency, scheme, chunk=256))
    except (ValueError, RuntimeError) as e:
        raise _fail(str(e)) from None
    except OSError as e:
        raise _fail(f"--url {url}: {e}") from None
    for why in summary.error_samples:
        typer.echo(f"error sample: {why}", err=True)
    typer.echo(summary.line(scheme.name if hasattr(scheme, "name") else reward_scheme))
    if summary.errors:
        raise typer.Exit(1)
