"""Helpers of the serving tests: tiny models, configs, a real uvicorn server in a thread."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import uvicorn

from recsys_rl.policy import BannerPolicy
from serving.config import ServeConfig
from serving.model_holder import ModelHolder, from_policy

N_PRODUCTS = 50
TOKEN = "test-admin-token"
SECRET = "test-impression-id-secret"


def tiny_policy(seed: int = 0) -> BannerPolicy:
    torch.manual_seed(seed)
    return BannerPolicy(N_PRODUCTS, 8, 16).eval()


def tiny_holder(seed: int = 0, version: str = "v-test") -> ModelHolder:
    return ModelHolder(model=from_policy(tiny_policy(seed), version))


def config(tmp_path, **kw) -> ServeConfig:
    base = {
        "events": f"sqlite:///{tmp_path}/unused.db",
        "seed": 0,
        "admin_token": TOKEN,
        "secret": SECRET,
        "reload_interval_s": 0,
    }
    return ServeConfig(**{**base, **kw})


def signed_id() -> str:
    """A well-signed impression id (under the tests' secret) that no banner was served with."""
    from serving.impression_ids import ImpressionIds

    return ImpressionIds(SECRET).new()


def serve_banner(c, **body) -> dict:
    r = c.post("/v1/banners", json={"user_id": 1, "viewed": 3, "history": [4, 5, 6], **body})
    assert r.status_code == 200, r.text
    return r.json()


def fields(response) -> list[str]:
    return [d["field"] for d in response.json()["detail"]]


@contextmanager
def running_server(app) -> Iterator[str]:
    """``app`` behind a real uvicorn server on a free loopback port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def set_alias(registry, version: str) -> None:
    import mlflow

    uri, name = registry
    mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
        name, "champion", version
    )


def unique_prefix() -> str:
    return f"test-serving-{uuid.uuid4().hex}"


def drop_redis_prefix(prefix: str) -> None:
    """Delete every key a test's Redis event store wrote under ``prefix``."""
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()
