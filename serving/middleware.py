"""Pure ASGI middleware (no per-request task or stream wrapping): body size limit, request metrics,
and an ``X-Worker-Pid`` header naming the server process that answered (``serve --workers N``).

The body is read here, up to ``max_body_bytes``: a declared Content-Length over the limit is refused
before reading anything, a body that turns out longer (chunked, or lying) is refused as soon as it
passes the limit; either way the app never sees it and the client gets 413. An accepted body is
handed to the app as one message.
"""

from __future__ import annotations

import os
import time

from starlette.responses import Response

from serving.errors import error_response
from serving.metrics import ServingMetrics

_BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH", "POST", "PUT", "PATCH"))
WORKER_HEADER = b"x-worker-pid"


class ServingMiddleware:
    def __init__(self, app, *, metrics: ServingMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self._worker = (WORKER_HEADER, str(os.getpid()).encode())  # built in the worker process

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), self._worker]
            await send(message)

        try:
            if scope["method"] in _BODY_METHODS:
                body = await read_body(scope, receive, self.max_body_bytes)
                if body is None:
                    status = 413
                    await too_large(self.max_body_bytes)(scope, receive, send)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(endpoint, scope["method"], status, time.perf_counter() - start)


async def read_body(scope, receive, limit: int) -> bytes | None:
    """The whole request body, or None if it is over ``limit`` bytes (declared or actual)."""
    for name, value in scope["headers"]:
        if name == b"content-length":  # a malformed one is ignored: the body read below decides
            if value.isdigit() and int(value) > limit:
                return None
            break
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # client went away; the app sees an empty body and its own disconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def too_large(limit: int) -> Response:
    return error_response(413, [{"field": "body", "message": f"request body over {limit} bytes"}])


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
