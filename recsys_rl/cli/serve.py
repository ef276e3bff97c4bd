"""The live path: `serve` (the banner service), `drive` (simulated users driving it over HTTP),
`train-online` (learning from the event stream the server writes) and `register` (a saved policy under
the registry alias serving follows).

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

from recsys_rl.cli.common import console, friendly, parse_overrides, simulator_at, use_threads
from recsys_rl.config import RunConfig, load_reward, load_run
from recsys_rl.records import PAD


@friendly
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
    cfg = load_config(config, overrides)
    if not cfg.has_model_source:
        raise ValueError("no model to serve: give --model-uri, --policy-path or a config with one")
    if cfg.policy_path is not None and not Path(cfg.policy_path).is_file():
        raise ValueError(f"policy_path: {cfg.policy_path}: file not found")
    if cfg.workers > 1:
        _serve_workers(cfg, access_log)
        return
    from serving.app import create_app

    app = create_app(cfg)
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


@friendly
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
    sim = simulator_at(sim_config)
    scheme = load_reward(reward_scheme)
    try:
        summary = asyncio.run(_drive(url, sim, users, seed, feedback, concurrency, scheme, chunk=256))
    except RuntimeError as e:
        raise ValueError(str(e)) from None
    except OSError as e:
        raise ValueError(f"--url {url}: {e}") from None
    for why in summary.error_samples:
        typer.echo(f"error sample: {why}", err=True)
    typer.echo(summary.line(scheme.name if hasattr(scheme, "name") else reward_scheme))
    if summary.errors:
        raise typer.Exit(1)


@friendly
def train_online(
    events: Annotated[
        str, typer.Option("--events", help="event store URI: sqlite:///events.db or redis://host:port/0")
    ],
    reference: Annotated[
        Path, typer.Option("--reference", help="the frozen reference (train-baseline output)")
    ],
    config: Annotated[
        Path | None, typer.Option("--config", help="run config YAML (train/online/tracking sections)")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override, e.g. --set online.register_every=5")
    ] = None,
    sim_config: Annotated[
        Path | None, typer.Option("--sim-config", help="judge guard rails exactly on this simulator")
    ] = None,
    max_updates: Annotated[
        int | None, typer.Option("--max-updates", help="stop after this many updates")
    ] = None,
    idle_exit: Annotated[
        float | None, typer.Option("--idle-exit", help="stop after this many idle seconds")
    ] = None,
    logs: Annotated[
        Path | None,
        typer.Option(
            "--logs", help="the logs that trained the reference: the warm start's data (warm_start.enabled)"
        ),
    ] = None,
) -> None:
    """Learn from the live event stream: KL-PG updates, checkpointed offsets, guard-railed registrations."""
    import mlflow

    from recsys_rl import tracking
    from recsys_rl.events import open_store
    from recsys_rl.finetune.live import OnlineTrainer
    from recsys_rl.policy import load_policy

    cfg = load_run(config, parse_overrides(set_))
    if cfg.warm_start.enabled and logs is None:
        raise ValueError("--logs: warm_start.enabled needs the logs that trained the reference")
    use_threads(cfg)
    ref = load_policy(reference).frozen_copy()
    value_fn = _sim_value_fn(sim_config, cfg) if sim_config else None
    warm_logs = None
    if logs is not None and cfg.warm_start.enabled:
        from recsys_rl.logdata.parquet import read_logs

        warm_logs = read_logs(logs)
    store = open_store(events)
    tracking.setup(cfg.tracking)
    with store, mlflow.start_run(run_name=f"online-{cfg.online.consumer}"):
        mlflow.set_tags({"data_source": f"events:{events.split('?')[0]}", "reward_scheme": str(cfg.reward)})
        trainer = OnlineTrainer(
            cfg, store, ref, value_fn=value_fn, log=lambda s: console.print(s), warm_logs=warm_logs
        )
        trainer.run(max_updates=max_updates, idle_exit_s=idle_exit)
    console.print(
        f"stopped after {trainer.updates} updates; registered versions: {trainer.registered or 'none'}"
    )


def _sim_value_fn(sim_config: Path, cfg: RunConfig):
    """Guard-rail value = exact expected reward of the greedy banners on a fixed simulated user set."""
    from recsys_rl.evaluation import greedy_banners, make_eval_set
    from recsys_rl.rewards import expected_reward

    sim = simulator_at(sim_config)
    es = make_eval_set(sim, cfg.train.eval_users, cfg.seed + 1000)
    scheme = load_reward(cfg.reward)

    def value(policy) -> float:
        return (
            expected_reward(scheme, sim.expected(es.users, greedy_banners(policy, es.contexts))).mean().item()
        )

    return lambda logged: value


@friendly
def register(
    policy: Annotated[
        Path, typer.Option("--policy", help="a saved policy (e.g. the reference from train-baseline)")
    ],
    alias: Annotated[
        str, typer.Option("--alias", help="registry alias to point at it (serving follows it)")
    ] = "champion",
    config: Annotated[
        Path | None, typer.Option("--config", help="run config YAML (tracking section used)")
    ] = None,
) -> None:
    """Register a saved policy in the MLflow model registry and point an alias at it."""
    import mlflow

    from recsys_rl import tracking
    from recsys_rl.policy import load_policy

    if not policy.is_file():
        raise FileNotFoundError(f"--policy: {policy}: file not found")
    cfg = load_run(config)
    tracking.setup(cfg.tracking)
    with mlflow.start_run(run_name=f"register-{policy.stem}"):
        uri, version = tracking.log_policy(load_policy(policy), cfg.tracking.registered_model, alias)
    console.print(f"registered {policy} as {cfg.tracking.registered_model} version {version} (@{alias})")
