"""FastAPI's native OpenTelemetry: off unless ``opentelemetry: true``, and then it traces requests
through whatever SDK the process has set up."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from serving.app import create_app
from tests.serving.helpers import config, tiny_holder

BODY = {"user_id": 1, "viewed": 2, "history": [3, 4]}


@pytest.fixture
def exported(monkeypatch) -> InMemorySpanExporter:
    """An SDK tracer provider standing in for the process-wide one (restored after the test)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    return exporter


@pytest.mark.parametrize("enabled", [False, True])
def test_requests_are_traced_only_when_switched_on(tmp_path, store, exported, enabled):
    app = create_app(config(tmp_path, opentelemetry=enabled), store=store, holder=tiny_holder())
    with TestClient(app) as client:
        assert client.post("/v1/banners", json=BODY).status_code == 200
    names = [span.name for span in exported.get_finished_spans()]
    if enabled:
        assert any("/v1/banners" in name for name in names), names
    else:
        assert names == []
