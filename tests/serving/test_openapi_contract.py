"""The OpenAPI document is the service's exact contract.

The document's corrections are pinned in-process (the error model, ``/metrics`` as text, the served
catalogue's bounds, the stateful links); then schemathesis' own CLI, with every check and every phase
(examples, coverage, fuzzing, stateful), runs against the real ``recsys-rl serve`` process with the
admin token supplied, and must find nothing. Its stateful phase must also have walked the document's
links banner -> feedback: the clicks and purchases it posted through them are in the event store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml
from fastapi.testclient import TestClient

from recsys_rl.events import open_store
from serving.app import create_app
from tests.net import free_port, wait_ready
from tests.serving.helpers import N_PRODUCTS, SECRET, TOKEN, config, tiny_holder

SCHEMATHESIS_TIMEOUT_S = 600


@pytest.fixture
def document(tmp_path, store) -> dict:
    app = create_app(config(tmp_path, max_batch_events=20), store=store, holder=tiny_holder())
    with TestClient(app) as c:
        return c.get("/openapi.json").json()


def test_every_error_is_documented_as_the_body_the_service_returns(document):
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    assert not {"HTTPValidationError", "ValidationError"} & set(document["components"]["schemas"])
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            for status, resp in op["responses"].items():
                if status[0] in "45":
                    assert resp["content"] == {"application/json": {"schema": error}}, (path, status)
            if method == "post":  # the middleware refuses an oversize body on any route
                assert "413" in op["responses"], path
    feedback = document["paths"]["/v1/feedback"]["post"]["responses"]
    assert {"404", "409", "422", "503"} <= set(feedback)


def test_metrics_are_documented_as_prometheus_text(document, client):
    ok = document["paths"]["/metrics"]["get"]["responses"]["200"]
    assert list(ok["content"]) == ["text/plain"]
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_bounds_the_service_enforces_are_in_the_schema(document):
    schemas = document["components"]["schemas"]
    banner = schemas["BannerRequest"]["properties"]
    assert banner["history"]["uniqueItems"] is True and banner["history"]["maxItems"] == 10
    assert banner["viewed"]["maximum"] == N_PRODUCTS - 1  # the served model's catalogue
    assert banner["history"]["items"] == {"type": "integer", "minimum": 0, "maximum": N_PRODUCTS - 1}
    assert schemas["FeedbackRequest"]["properties"]["events"]["maxItems"] == 20  # max_batch_events
    click, purchase = schemas["FeedbackEvent"]["oneOf"]
    assert click["properties"]["units"]["maximum"] == 0
    assert purchase["properties"]["units"]["minimum"] == 1 and "units" in purchase["required"]
    assert document["components"]["securitySchemes"]["AdminToken"]["name"] == "X-Admin-Token"


def test_a_banner_links_to_feedback_on_it(document):
    links = document["paths"]["/v1/banners"]["post"]["responses"]["200"]["links"]
    assert {link["operationId"] for link in links.values()} == {"post_feedback"}
    click = links["ClickOnTheBanner"]["requestBody"]["events"][0]
    assert click["impression_id"] == "$response.body#/impression_id"


def test_repeated_history_is_refused_as_the_schema_says(client):
    r = client.post("/v1/banners", json={"user_id": 1, "viewed": 2, "history": [3, 3]})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "history[1]"


@pytest.mark.slow
def test_schemathesis_with_all_checks_finds_nothing(tmp_path, policy_file):
    port = free_port()
    events = f"sqlite:///{tmp_path}/events.db"
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "policy_path": str(policy_file),
                "events": events,
                "port": port,
                "secret": SECRET,
                "admin_token": TOKEN,
                "reload_interval_s": 0,
                "seed": 0,
                "max_batch_events": 50,
            }
        )
    )
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recsys_rl", "serve", "--config", str(cfg)], stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/readyz", proc, log_path.read_text)
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-examples",
                "150",
                "--seed",
                "14",
                "--generation-database",
                "none",
                "--header",
                f"X-Admin-Token: {TOKEN}",
                "--request-timeout",
                "10",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=SCHEMATHESIS_TIMEOUT_S,
            cwd=tmp_path,
            env={**os.environ, "NO_COLOR": "1"},
        )
    finally:
        proc.terminate()
        proc.wait(30)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "No issues found" in out, out[-3000:]  # no failures and no warnings either
    assert "API Links:    2 covered / 2 selected / 2 total" in out, out[-3000:]
    with open_store(events) as store:
        stored = store.read_ready("contract-check", time.time() + 1e6, 1_000_000).feedback
    via_links = {
        f.event_id.split("-", 1)[0] for f in stored if f.event_id.startswith(("click-", "purchase-"))
    }
    assert via_links == {"click", "purchase"}, "the stateful phase stored no feedback through the links"
