"""The service behind a real uvicorn server on loopback, driven over HTTP (SQLite and Redis stores),
and the `serve` command as its own process."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from recsys_rl.events import open_store
from serving.app import create_app
from tests.net import free_port, wait_ready
from tests.serving.helpers import config, drop_redis_prefix, running_server, tiny_holder, unique_prefix


def banner_and_feedback_round_trip(url: str) -> dict:
    with httpx.Client(base_url=url) as http:
        assert http.get("/healthz").status_code == 200
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        banner = http.post("/v1/banners", json={"user_id": 5, "viewed": 1, "history": [2, 3]}).json()
        events = [
            {
                "event_id": "ev-1",
                "impression_id": banner["impression_id"],
                "type": "click",
                "product_id": banner["items"][0],
            },
            {
                "event_id": "ev-2",
                "impression_id": banner["impression_id"],
                "type": "purchase",
                "product_id": banner["items"][0],
                "units": 1,
                "price": 2.0,
            },
        ]
        first = http.post("/v1/feedback", json={"events": events}).json()
        again = http.post("/v1/feedback", json={"events": events}).json()
        unknown = http.post("/v1/feedback", json={**events[0], "impression_id": "nope"})
        metrics = http.get("/metrics").text
    assert first == {"accepted": 2, "duplicates": 0} and again == {"accepted": 0, "duplicates": 2}
    assert unknown.status_code == 422
    assert "recsys_feedback_events_written_total 2.0" in metrics
    return banner


def test_real_server_on_sqlite(tmp_path, store):
    with running_server(create_app(config(tmp_path), store=store, holder=tiny_holder())) as url:
        banner = banner_and_feedback_round_trip(url)
    assert store.get_impression(banner["impression_id"]).items == tuple(banner["items"])
    assert store.count_feedback() == 2


@pytest.mark.redis
def test_real_server_on_redis(tmp_path):
    prefix = unique_prefix()
    uri = f"redis://127.0.0.1:6379/0?prefix={prefix}&durability=best-effort"
    try:
        app = create_app(config(tmp_path, events=uri), holder=tiny_holder())  # the app opens the store
        with running_server(app) as url:
            banner = banner_and_feedback_round_trip(url)
        with open_store(uri) as check:
            assert check.get_impression(banner["impression_id"]).items == tuple(banner["items"])
            assert check.count_feedback() == 2
    finally:
        drop_redis_prefix(prefix)


def test_readyz_reports_an_unreachable_store(tmp_path):
    """The store goes away under the app: not ready, and banners are refused (503) rather than served unlogged."""
    from recsys_rl.events import SqliteEventStore

    store = SqliteEventStore(tmp_path / "events.db")
    with running_server(create_app(config(tmp_path), store=store, holder=tiny_holder())) as url:
        store.close()  # the store is gone from under the app
        with httpx.Client(base_url=url) as http:
            ready = http.get("/readyz")
            banner = http.post("/v1/banners", json={"user_id": 5, "viewed": 1})
    assert ready.status_code == 503 and "event store unreachable" in ready.json()["detail"][0]["message"]
    assert (
        banner.status_code == 503 and "could not log the impression" in banner.json()["detail"][0]["message"]
    )


def test_serve_command_runs_a_server_process(tmp_path, policy_file):
    port = free_port()
    code = "import sys, typer; from recsys_rl.cli.serve import serve; sys.argv[0] = 'serve'; typer.run(serve)"
    args = [
        "--policy-path",
        str(policy_file),
        "--events",
        f"sqlite:///{tmp_path}/events.db",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(
            f"{url}/readyz", proc, lambda: proc.stderr.read().decode() if proc.poll() is not None else ""
        )
        banner_and_feedback_round_trip(url)
    finally:
        proc.terminate()
        code_, err = proc.wait(30), proc.stderr.read().decode()
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught
    assert code_ in (0, -15) and "Finished server process" in err, err


def test_serve_command_refuses_a_missing_model_source(tmp_path):
    code = "import sys, typer; from recsys_rl.cli.serve import serve; sys.argv[0] = 'serve'; typer.run(serve)"
    out = subprocess.run(
        [sys.executable, "-c", code, "--events", f"sqlite:///{tmp_path}/e.db"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "no model to serve" in out.stderr
