"""The banner fast path answers exactly as the FastAPI route would: same bodies, statuses, headers,
metrics and logged impressions, for banners and for every documented error."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.serving.helpers import config, tiny_holder

REQUESTS = [
    ({"user_id": 1, "viewed": 3, "history": [4, 5, 6]}, 200),
    ({"user_id": 1, "viewed": 3, "history": [4, 5, 6], "mode": "deterministic", "k": 3}, 200),
    ({"user_id": 1, "viewed": 999, "history": [4]}, 422),  # outside the catalogue
    ({"user_id": 1, "viewed": 3, "history": [4], "k": 9}, 422),  # more than the model's K
    ({"user_id": "x", "history": [1, 1]}, 422),  # schema: wrong type
    ({"viewed": 3}, 422),  # schema: missing field
]


def _answers(app, bodies) -> tuple[list[tuple[int, dict, dict]], str]:
    with TestClient(app) as c:
        out = []
        for body in bodies:
            if isinstance(body, bytes):
                r = c.post("/v1/banners", content=body, headers={"content-type": "application/json"})
            else:
                r = c.post("/v1/banners", json=body)
            headers = {k: v for k, v in r.headers.items() if k != "content-length"}
            out.append((r.status_code, headers, r.json()))
        metrics = c.get("/metrics").text
    return out, metrics


def _comparable(body: dict) -> dict:
    return {
        k: v for k, v in body.items() if k not in ("impression_id", "items", "propensity", "log_propensity")
    }


@pytest.mark.parametrize("extra", [{}, {"max_body_bytes": 1024}])
def test_fast_path_answers_as_the_fastapi_route(tmp_path, extra):
    long = b'{"user_id": 1, "history": [' + b"1," * 600 + b"1]}"
    bodies = [b for b, _ in REQUESTS] + [b"{not json", b"[1, 2]", long]
    answers = {}
    for fast in (True, False):
        (tmp_path / str(fast)).mkdir()
        app = create_app(config(tmp_path / str(fast), **extra), holder=tiny_holder())
        if not fast:
            app.fast_routes = {}
        assert bool(app.fast_routes) == fast
        answers[fast] = _answers(app, bodies)
    (fast_out, fast_metrics), (slow_out, slow_metrics) = answers[True], answers[False]
    for (fs, fh, fb), (ss, sh, sb) in zip(fast_out, slow_out, strict=True):
        assert fs == ss and fh == sh
        assert (_comparable(fb) if fs == 200 else fb) == (_comparable(sb) if ss == 200 else sb)
    statuses = [s for s, _, _ in fast_out]
    if not extra:
        assert statuses[: len(REQUESTS)] == [s for _, s in REQUESTS]
        assert statuses[len(REQUESTS) :] == [422, 422, 422]
    else:
        assert statuses[-1] == 413  # the long body, over the limit

    def counts(text):
        return sorted(
            line.split(" ")[0] + " " + line.split(" ")[1]
            for line in text.splitlines()
            if line.startswith("recsys_http_requests_total{") and "/v1/banners" in line and "413" not in line
        )

    assert counts(fast_metrics) == counts(slow_metrics)
    if extra:  # the one difference: the full stack refuses the body before routing ("unmatched")
        assert 'endpoint="/v1/banners",method="POST",status="413"} 1.0' in fast_metrics
        assert 'endpoint="unmatched",method="POST",status="413"} 1.0' in slow_metrics


def test_fast_path_is_off_when_fastapi_telemetry_is_on(tmp_path):
    app = create_app(config(tmp_path, opentelemetry=True), holder=tiny_holder())
    assert not getattr(app, "fast_routes", {})
