"""The banner route answered below FastAPI's per-request layers.

Why: one ``POST /v1/banners`` through FastAPI's stack (server-error and exception middleware, the
async exit stack, the router's match over every route, dependency solving, the endpoint wrapper)
cost 153-170 µs of the event loop's time against 20-32 µs on this path (in-process, scoring replaced
by a constant, alternating runs on the 2-core machine). The event loop shares one GIL with the scoring thread and
the store's writer, so those microseconds are throughput and tail latency lost on every banner.

What stays the same: the route is still a FastAPI route (the OpenAPI document, the docs pages and
TestClient are built from it), and both ways run the same handler (``banner_body``), render errors
with the same ``error_response``, and apply ``ServingMiddleware``'s body limit, worker header and
request metrics, so a client cannot tell which one answered (one difference, for the better: a body
over the limit counts under /v1/banners, where the full stack, refusing it before routing, counts it
as unmatched). Any other request, and every request when FastAPI's OpenTelemetry is on (its spans
come from the stack this skips), takes the full stack.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.responses import Response

from serving.errors import ApiError, error_response
from serving.metrics import ServingMetrics
from serving.middleware import WORKER_HEADER, read_body, too_large

Handler = Callable[[bytes], Awaitable[bytes]]
"""A JSON route: request body -> response body; raises ApiError for a documented 4xx/5xx."""


class FastPathApp(FastAPI):
    """FastAPI that answers the routes of ``fast_routes`` ((method, path) -> handler) directly."""

    fast_routes: dict[tuple[str, str], Handler]
    fast_metrics: ServingMetrics | None = None
    max_body_bytes: int = 0

    def enable_fast_routes(
        self, routes: dict[tuple[str, str], Handler], metrics: ServingMetrics, max_body_bytes: int
    ) -> None:
        self.fast_routes, self.fast_metrics, self.max_body_bytes = routes, metrics, max_body_bytes
        self._worker = (WORKER_HEADER, str(os.getpid()).encode())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            handler = getattr(self, "fast_routes", {}).get((scope["method"], scope["path"]))
            if handler is not None:
                await self._answer(handler, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _answer(self, handler: Handler, scope, receive, send) -> None:
        start = time.perf_counter()
        status = 500
        try:
            body = await read_body(scope, receive, self.max_body_bytes)
            if body is None:
                status = 413
                await too_large(self.max_body_bytes)(scope, receive, send)
                return
            try:
                response = Response(await handler(body), media_type="application/json")
            except ApiError as exc:
                response = error_response(exc.status, exc.items, exc.headers)
            status = response.status_code
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [*response.raw_headers, self._worker],
                }
            )
            await send({"type": "http.response.body", "body": response.body})
        finally:
            self.fast_metrics.observe_request(
                scope["path"], scope["method"], status, time.perf_counter() - start
            )
