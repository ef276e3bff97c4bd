"""Probes and metrics: ``/healthz`` (process alive), ``/readyz`` (can serve), ``/metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import orjson
from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse, Response

from serving.errors import error_response
from serving.models import HealthResponse, ReadyResponse
from serving.routers.openapi import error_responses
from serving.services import Services

STORE_PROBE_TIMEOUT_S = 2.0


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def ops_router(services: Services) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get(
        "/healthz",
        summary="Liveness: the process answers",
        responses={200: {"model": HealthResponse, "description": "alive"}},
    )
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @router.get(
        "/readyz",
        summary="Readiness: a model is loaded and the event store answers (a stale registry is reported, "
        "not failed: the current model keeps serving)",
        responses={
            200: {"model": ReadyResponse, "description": "ready: the model served and its catalogue"},
            **error_responses(503, descriptions={503: "not ready; the detail says why"}),
        },
    )
    async def readyz() -> Response:
        problems = []
        model = services.holder.current
        if model is None:
            why = services.holder.last_error
            problems.append(
                {"field": None, "message": "no model loaded yet" + (f" (last error: {why})" if why else "")}
            )
        store = services.store
        if store is None:
            problems.append({"field": None, "message": "the event store is not open"})
        else:
            try:  # an indexed lookup: cheap on both backends, and it needs a live connection
                await asyncio.wait_for(
                    run_in_threadpool(store.get_impression, "readyz-probe"), STORE_PROBE_TIMEOUT_S
                )
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                problems.append(
                    {"field": None, "message": f"event store unreachable: {type(exc).__name__}: {exc}"}
                )
        if problems:
            return error_response(503, problems)
        body = {
            "status": "ready",
            "model_version": model.version,
            "n_products": model.n_products,
            "n_user_features": model.n_user_features,
            "temperature": services.cfg.temperature,
            "event_store_durability": store.durability,
        }
        holder = services.holder
        if holder.source is not None:  # ready while stale: the current model still serves
            stale = holder.stale_since
            body["registry"] = (
                {"status": "fresh", "last_poll": _iso(holder.last_good_poll)}
                if stale is None
                else {
                    "status": "stale",
                    "since": _iso(stale),
                    "stale_s": round(time.time() - stale, 1),
                    "last_error": holder.last_error,
                }
            )
        return Response(orjson.dumps(body), media_type="application/json")

    @router.get(
        "/metrics",
        summary="Prometheus metrics (text exposition format)",
        response_class=PlainTextResponse,
        responses={
            200: {
                "description": "the metrics, in the Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics() -> Response:
        return Response(generate_latest(services.metrics.exposition()), media_type=CONTENT_TYPE_LATEST)

    return router
