"""Fixtures for the banner service: tiny policies, real stores (SQLite; Redis where marked), a real
MLflow registry in a temporary SQLite file, and the app in-process or behind a real uvicorn server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from recsys_rl.events import open_store
from recsys_rl.policy import save_policy
from serving.app import create_app
from tests.serving.helpers import config, drop_redis_prefix, tiny_holder, tiny_policy, unique_prefix


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "policy.pt"
    save_policy(tiny_policy(), path)
    return path


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def events_uri(request, tmp_path) -> Iterator[str]:
    """The URI of a fresh shared event store, once on SQLite and once on the real Redis (its keys under
    a prefix of its own, dropped afterwards; best-effort: the shared Redis keeps nothing on disk)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/events.db"
        return
    prefix = unique_prefix()
    try:
        yield f"redis://127.0.0.1:6379/0?prefix={prefix}&durability=best-effort"
    finally:
        drop_redis_prefix(prefix)


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/events.db")
    yield s
    s.close()


@pytest.fixture
def client(tmp_path, store) -> Iterator[TestClient]:
    """The app on the SQLite store with a fixed tiny model, in-process."""
    app = create_app(config(tmp_path), store=store, holder=tiny_holder())
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A real MLflow registry (SQLite) holding two versions of 'banner-policy'; alias champion -> 1.

    Returns (tracking_uri, name). Built once per session: the first model logged costs seconds."""
    import mlflow

    from recsys_rl import tracking
    from recsys_rl.tracking import log_policy

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    try:
        tracking.use(uri, "serving-tests")
        with mlflow.start_run():
            log_policy(tiny_policy(1), "banner-policy", "champion")
        with mlflow.start_run():
            log_policy(tiny_policy(2), "banner-policy", None)
    finally:
        mlflow.set_tracking_uri(previous)
    return uri, "banner-policy"
