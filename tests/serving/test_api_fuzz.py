"""Schemathesis against the app's own OpenAPI document, in-process (ASGI transport, lifespan started):
whatever requests the schema allows (at most MAX_EXAMPLES per operation, with and without the admin
token), the service never answers 5xx, a request the schema allows is served (banners) or refused
only for what no schema can know (feedback on an impression that was never served: 404/409), and
every 4xx body is ``{"detail": [{"field": ..., "message": ...}, ...]}`` (a 401/413/422 names the field).
The full contract check, schemathesis' CLI with all checks against a real server process, is in
test_openapi_contract.py.

The schema is driven through its Hypothesis strategies rather than ``schema.parametrize``: the app
needs a store opened per test, and schemathesis' fixture loader does not run under pytest 9."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from recsys_rl.events import open_store
from serving.app import create_app
from tests.serving.helpers import TOKEN, config, tiny_holder

MAX_EXAMPLES = 30
WITH_BODY = {"/v1/banners", "/v1/feedback", "/admin/pin"}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    store = open_store(f"sqlite:///{tmp}/events.db")
    app = create_app(config(tmp, max_batch_events=20), store=store, holder=tiny_holder())
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    store.close()


def check_error_body(response) -> None:
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("detail"), list) and body["detail"], body
    for item in body["detail"]:
        assert set(item) == {"field", "message"} and isinstance(item["message"], str), item
        if response.status_code in (401, 413, 422):
            assert isinstance(item["field"], str) and item["field"], item


def test_every_operation_is_in_the_schema(api_schema):
    ops = {f"{r.ok().method.upper()} {r.ok().path}" for r in api_schema.get_all_operations()}
    assert {"POST /v1/banners", "POST /v1/feedback", "GET /readyz", "POST /admin/pin"} <= ops


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_5xx_and_4xx_bodies_name_their_field(api_schema, mode):
    """Positive: requests the schema allows; negative: requests that break it (wrong types, missing
    fields, out-of-range values)."""
    statuses: dict[str, set[int]] = {}
    for result in api_schema.get_all_operations():
        op = result.ok()
        seen = statuses.setdefault(f"{op.method.upper()} {op.path}", set())

        @settings(
            max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case):
            for headers in (None, {"X-Admin-Token": TOKEN}):
                response = case.call(headers=headers)
                seen.add(response.status_code)  # noqa: B023 - run() is called within this iteration
                assert response.status_code < 500, (case.method, case.path, case.body, response.text)
                if 400 <= response.status_code < 500:
                    check_error_body(response)

        try:
            run()
        except Unsatisfiable:  # negative mode: an operation without inputs cannot be sent invalid ones
            assert mode == GenerationMode.NEGATIVE and op.path not in WITH_BODY, op.path
    if mode == GenerationMode.POSITIVE:  # the schema is exact: whatever it allows is served
        assert statuses["POST /v1/banners"] == {200}, statuses
        assert statuses["POST /v1/feedback"] <= {200, 404, 409}, statuses  # made-up impression ids
    else:
        assert 422 in statuses["POST /v1/banners"] and 422 in statuses["POST /v1/feedback"], statuses


def test_an_unknown_field_with_an_empty_name_is_still_named(api_schema):
    """Found by the negative fuzzing: an extra key "" used to give ``field: null``."""
    from fastapi.testclient import TestClient

    with TestClient(api_schema.app) as c:
        r = c.post("/v1/banners", json={"user_id": 1, "viewed": 2, "": 0})
    assert r.status_code == 422 and r.json()["detail"] == [{"field": '[""]', "message": "unknown field"}]


@pytest.mark.parametrize("body", [[], 7, "x", None])
def test_a_body_that_is_not_an_object_is_blamed_on_the_body(api_schema, body):
    """Found by the negative fuzzing: a JSON array/number as the body used to give ``field: null``."""
    from fastapi.testclient import TestClient

    with TestClient(api_schema.app) as c:
        r = c.post("/v1/banners", json=body)
        pin = c.post("/admin/pin", json=body, headers={"X-Admin-Token": TOKEN})
    assert r.status_code == 422 and [d["field"] for d in r.json()["detail"]] == ["body"]
    assert pin.status_code == 422 and [d["field"] for d in pin.json()["detail"]] == ["body"]
